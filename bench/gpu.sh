#!/usr/bin/env bash
# GPU throughput check, harrier-270m shape, ours vs sentence-transformers (bench/gpu_throughput.py says what runs).
#
#   bash bench/gpu.sh [extra args]    e.g. bash bench/gpu.sh --out /tmp/gpu.json
#
# On a CUDA machine it runs at full size (a few minutes on an H200); without one it runs tiny on CPU, which is how
# tests/test_bench_smoke.py keeps it from rotting. PYTHON picks the interpreter (default: the repo's .venv, else
# python3, which on the GPU machine is the one that holds PyTorch).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
exec "$PYTHON" -m bench.gpu_throughput "$@"
