#!/usr/bin/env bash
# Set up (idempotent), then run the main job: train LeNet-5 on real MNIST, prune it with MIPP to
# half its FLOPs (MIPP searches the confidence itself), re-train it and write the pruned model,
# summary.json and layer_ratios.png to runs/lenet5-mipp. The MIPP iteration counts are cut from
# the paper's 1500/150/35 to 300/10/10 and the search to 2 walks (the pruning took 24 s on an idle
# 2-core machine with the fast engine, see README). Extra arguments are passed to `infoprune prune`
# (e.g. --flops 0.25, --device cuda, or --set refit_iterations=150 for the paper's re-fits).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/infoprune prune --model lenet5 --data mnist --method mipp --flops 0.5 \
  --set fit_iterations=300 --set refit_iterations=10 --set ordering_iterations=10 --set max_passes=2 \
  --train-epochs 3 --retrain-epochs 2 --out runs/lenet5-mipp "$@"
