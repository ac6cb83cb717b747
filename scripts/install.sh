#!/usr/bin/env bash
# Creates .venv and installs headstart into it, with its test and docs tools and the Ray, TFLite
# and Core ML extras,
# and with npm, onnxruntime-web's files for `export --web` and the JavaScript example's packages
# (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# pip names every local index folder this machine lacks: not news
.venv/bin/python -m pip install --quiet -e ".[dev,ray,docs,tflite,coreml]" 2> >(grep -v "^WARNING: Location" >&2)
if command -v npm >/dev/null; then
  bash scripts/vendor_web.sh
  # the JavaScript client in examples/, which the tests compare with Python
  npm ci --prefix examples/node --ignore-scripts --no-audit --no-fund --silent
else
  echo "npm not found: export --web will say what it lacks" >&2
fi
