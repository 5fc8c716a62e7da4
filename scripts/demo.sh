#!/usr/bin/env bash
# Set up (idempotent), then run the main job: train LeNet-5 on real MNIST, prune it with MIPP,
# re-train it and write the pruned model, summary.json and layer_ratios.png to runs/lenet5-mipp.
# Extra arguments are passed to `infoprune prune` (e.g. --confidence 0.99 --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/infoprune prune --model lenet5 --data mnist --method mipp --confidence 0.9 \
  --train-epochs 3 --retrain-epochs 2 --out runs/lenet5-mipp "$@"
