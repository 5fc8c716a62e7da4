#!/usr/bin/env bash
# MIPP's scaling bench on one GPU (≤ 8 minutes), or on the CPU at smaller sizes when there is none.
#
#   bash bench/gpu_check.sh            # writes runs/gpu-check/{runs.jsonl,summary.txt,scaling.png}
#
# GPU: the closed-form engine on the MLPs (h = 64, 256, 1024), VGG11 and ResNet-18 at CIFAR shape
# and ResNet-50 at 224 × 224 (flops=0.5); the fast MLP engine at the paper's counts on the MLPs
# h = 64, 256 and on VGG11 and ResNet-18; the reference MLP engine on the MLPs h = 64, 256. A run
# that passes --timeout (60 s) is stopped and reported, so the 12 runs fit in 8 minutes.
# CPU: the MLPs h = 64 and 128 with every engine, and ResNet-20 with the closed-form engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PY=.venv/bin/python
OUT=${OUT:-runs/gpu-check}
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(0))"
  "$PY" bench/mipp_scaling.py --device cuda --threads 1 --out "$OUT" --timeout 60 \
    --nets mlp vgg11 resnet18 resnet50-imagenet --widths 64 256 1024 --engines gaussian fast \
    --mlp-engine-widest 256 --mlp-engine-nets vgg11 resnet18
  "$PY" bench/mipp_scaling.py --device cuda --threads 1 --out "$OUT" --timeout 60 \
    --nets mlp --widths 64 256 --engines reference
else
  echo "no GPU: the CPU sizes"
  "$PY" bench/mipp_scaling.py --device cpu --threads 1 --out "$OUT" --timeout 600 \
    --nets mlp resnet20 --widths 64 128 --engines gaussian fast reference --mlp-engine-widest 128
fi
