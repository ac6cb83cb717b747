#!/usr/bin/env bash
# Creates .venv and installs headstart into it, with its test and docs tools and the Ray extra
# (idempotent).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
# pip names every local index folder this machine lacks: not news
.venv/bin/python -m pip install --quiet -e ".[dev,ray,docs]" 2> >(grep -v "^WARNING: Location" >&2)
