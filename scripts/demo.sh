#!/usr/bin/env bash
# Quick start 1: set everything up and run the end-to-end demo on an embedded local Ray.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
RUN=${RUN:-runs/demo}
MAX_MB=${MAX_MB:-8}
set -x
curate corpus system data/system.jsonl --max-mb "$MAX_MB"
curate run configs/demo.yaml --out "$RUN"
curate query "$RUN" "SELECT source, count(*) AS docs, sum(n_chars) AS chars FROM docs GROUP BY ALL ORDER BY chars DESC"
