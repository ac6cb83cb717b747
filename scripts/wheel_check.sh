#!/usr/bin/env bash
# Builds the wheel and the sdist, installs the wheel (not editable) into a clean virtual
# environment outside the repository, and runs it as a user would: version, sample, train,
# predict.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf dist
.venv/bin/python -m build --outdir dist . >/dev/null
ls dist/headstart-*.tar.gz dist/headstart-*.whl
user="$(mktemp -d)"
trap 'rm -rf "$user"' EXIT
python3 -m venv "$user/venv"
"$user/venv/bin/python" -m pip install --quiet dist/headstart-*.whl 2> >(grep -v "^WARNING: Location" >&2)
cd "$user"
bin="$user/venv/bin"
"$bin/headstart" --version
"$bin/python" -c "import headstart, pathlib
here = pathlib.Path(headstart.__file__).parent
for name in ('py.typed', 'serving/page.html', 'labelling/page.html', 'studio/studio.html',
             'export/web/index.html',
             'export/web/runtime/ort-wasm-simd-threaded.wasm'):
    assert (here / name).is_file(), name
"
"$bin/headstart" sample digits digits
"$bin/headstart" train digits -o model --strategy linear --quiet --cache-dir cache
"$bin/headstart" predict model digits/3/0003.png digits/7/0007.png --top-k 1 --cache-dir cache
"$bin/headstart" export model --web page --cache-dir cache
echo "the wheel installs and runs"
