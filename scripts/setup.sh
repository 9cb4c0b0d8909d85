#!/usr/bin/env bash
# Create .venv in the repo (if missing) and install curate with everything it needs.
# torch goes in first as the local CPU build (torch==2.13.0): a plain `torch` requirement would
# pull several GB of CUDA wheels. An already installed torch >= 2.4 is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
. .venv/bin/activate
stamp=.venv/.curate-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install -q --upgrade pip
  if ! python -c "import torch, sys; sys.exit(0 if tuple(map(int, torch.__version__.split('+')[0].split('.')[:2])) >= (2, 4) else 1)" 2>/dev/null; then
    echo "setup: installing torch==2.13.0 (CPU build)"
    python -m pip install -q torch==2.13.0
  fi
  echo "setup: installing curate and its dependencies"
  python -m pip install -q -e ".[test]"
  # megatron-core's own indexed-dataset reader checks our .bin/.idx files in the tests; without
  # its dependencies (it needs only torch and numpy for that reader), so no CUDA stack comes in.
  python -m pip install -q --no-deps megatron-core
  touch "$stamp"
fi
# Headless Chromium for the web page's browser test (tests/test_serve_browser.py skips without it):
# installed only as root, where apt-get exists and chromium is missing.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v chromium >/dev/null; then
  echo "setup: installing chromium (apt-get)"
  apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null || echo "setup: chromium unavailable; the browser test will skip"
fi
