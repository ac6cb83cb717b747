#!/usr/bin/env bash
# Creates .venv and installs headstart into it, with its test and docs tools and the Ray extra
# (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev,ray,docs]"
