#!/usr/bin/env bash
# Set up (idempotent), then run the main job: train LeNet-5 on real MNIST, prune it with MIPP to a
# quarter of its FLOPs (MIPP searches the confidence itself; its closed-form engine, the default,
# takes seconds), re-train it and write the pruned model, summary.json and layer_ratios.png to
# runs/lenet5-mipp. Extra arguments are passed to `infoprune prune` (e.g. --flops 0.5,
# --device cuda, or --set engine=fast for the paper's MLP test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/infoprune prune --model lenet5 --data mnist --method mipp --flops 0.25 \
  --train-epochs 3 --retrain-epochs 2 --out runs/lenet5-mipp "$@"
