#!/usr/bin/env bash
# Quick start 2: set everything up and run the test suite (CPU only; GPU tests skip cleanly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec python -m pytest -q "$@"
