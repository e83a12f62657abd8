#!/usr/bin/env bash
# The GPU check of docs/performance.md: the book's own PyTorch code and this project's, side by side on one GPU,
# and `vgg bench --device cuda`; one table at the end (and OUT/gpu_check.json, OUT/gpu_check.md).
# Needs PyTorch with CUDA and torchvision; the four Fashion-MNIST files in a folder named by FASHION_MNIST_DIR
# (or where common.data finds them). Runs from a checkout, no install step: about 7.5 minutes on an H200
# (measured 2026-11-27: 7.4 min of parts, 8.4 with --levers; the host CPU part is 1.4 of them, only where it has AMX).
#   FASHION_MNIST_DIR=/path/to/fashion-mnist scripts/gpu_check.sh [OUT] [--quick] [--skip book,...] [--levers] [--compile]
# The targets of --compile in one call (estimated 7 minutes on an H200; not run on a GPU yet): scripts/gpu_check.sh OUT --skip same,bench,cpu --compile
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
out="${1:-runs/gpu_check}"
shift || true
exec "${PYTHON:-python3}" scripts/gpu_check.py --out "$out" "$@"
