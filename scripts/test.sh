#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. With no arguments, the tests marked `slow`
# (MIPP on every large CIFAR network, ~30 min on 2 cores) are skipped; pass pytest
# arguments to choose, e.g. `bash scripts/test.sh -m slow` or `bash scripts/test.sh tests/test_mipp.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ "$#" -eq 0 ]; then
  set -- -m "not slow"
fi
exec .venv/bin/python -m pytest -q "$@"
