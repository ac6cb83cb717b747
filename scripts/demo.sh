#!/usr/bin/env bash
# The main job end to end, offline: install, then train, evaluate and predict on real handwritten
# digits that ship inside scikit-learn.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"
rm -rf demo
headstart sample digits demo/digits
headstart train demo/digits -o demo/model
headstart evaluate demo/model demo/digits
headstart predict demo/model demo/digits/3/0003.png demo/digits/7/0007.png demo/digits/8/0008.png --top-k 3
headstart export demo/model -o demo/digits.onnx
headstart predict demo/digits.onnx demo/digits/5/0005.png --top-k 3
