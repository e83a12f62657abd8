#!/usr/bin/env bash
# Set up everything on a fresh machine: the Fashion-MNIST data (Debian package), .venv, the packages.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=/usr/share/datasets/fashion-mnist
if [ ! -f "$DATA/train-images-idx3-ubyte.gz" ] && [ -z "${FASHION_MNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "== installing the real Fashion-MNIST (Debian package dataset-fashion-mnist)"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "Fashion-MNIST not found in $DATA and apt-get is missing: set FASHION_MNIST_DIR to a folder" \
         "holding the four IDX files" >&2
    exit 1
  fi
fi
# the headless browser the suite opens `vgg teach`'s page in (Debian's chromium; playwright downloads none)
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    echo "== installing chromium (Debian package) for the browser tests"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: /usr/bin/chromium is missing and apt-get is not here: the browser tests of vgg teach will fail" >&2
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
STAMP=.venv/.installed
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ scripts/constraints.txt -nt "$STAMP" ]; then
  echo "== installing the four frameworks into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[all,test]"
  touch "$STAMP"
fi
if [ "${VGG_MUTATION:-0}" = 1 ] && ! .venv/bin/python -c "import mutmut" 2>/dev/null; then
  echo "== installing mutmut into .venv (make mutation)"
  .venv/bin/python -m pip install -q -c scripts/constraints.txt -e ".[mutation]"
fi
