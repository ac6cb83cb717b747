#!/usr/bin/env bash
# Copies onnxruntime-web's wasm runtime (npm, MIT) into the package, where `export --web` finds
# it: the exported page loads nothing from another host. Needs npm; idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
npm ci --prefix web --ignore-scripts --no-audit --no-fund --silent
source=web/node_modules/onnxruntime-web
target=src/headstart/export/web/runtime
mkdir -p "$target"
for file in ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm; do
  cp "$source/dist/$file" "$target/$file"
done
version=$(node -p "require('./$source/package.json').version")
printf 'onnxruntime-web %s, MIT licence, Copyright (c) Microsoft Corporation.\n' "$version" \
  > "$target/NOTICE.txt"
