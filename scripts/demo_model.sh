#!/usr/bin/env bash
# The model in the loop, after `bash scripts/demo.sh` (which trains runs/demo/train/model):
#   1. lm_score: every document's bits per byte under the demo's model (configs/lm_score.yaml);
#   2. PreSelect: a ladder of the demo's own models (the random base, a mid-training checkpoint,
#      the final model) ranked by bits per byte on the held-out `code` documents (the recipe's
#      target group); documents whose per-model BPB ranks the ladder the same way label a fastText
#      classifier;
#   3. the corpus scored with it (quality_preselect), queryable like any column.
# The demo's ladder comes from one short run, so most documents rank it the same way: on the
# first 4,000 characters of 400 documents about a quarter rank the last two checkpoints the other
# way, which gives ~100 labels of each class. fastText at PreSelect's settings (5 epochs, lr 0.1)
# stays flat on so few documents, so the demo trains 25 epochs at lr 0.5 (held-out AUC 0.93 on one
# run here, 20 documents). tests/test_preselect.py builds a ladder of models that disagree more.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
RUN=runs/demo   # configs/lm_score.yaml and configs/demo_preselect.yaml name this run
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
if [ ! -d "$RUN/train/model" ]; then
  echo "demo_model: $RUN/train/model is missing: run 'bash scripts/demo.sh' first" >&2
  exit 2
fi

step "1. lm_score: bits per byte of every document under the demo's model"
curate run configs/lm_score.yaml
curate query runs/lm_score "SELECT source, lm_bucket, count(*) AS docs, round(avg(bpb_demo), 3) AS bpb FROM docs GROUP BY ALL ORDER BY 1, 2"

step "2. PreSelect: a ladder of the demo's own checkpoints, target = held-out code documents"
MID=$(ls -d "$RUN"/train/checkpoints/step-* | head -n 1)
TARGET="$RUN/eval/code.parquet"
[ -f "$TARGET" ] || TARGET=$(ls "$RUN"/eval/*.parquet | head -n 1)
curate train-preselect "$RUN" --ladder "$RUN/base" "$MID" "$RUN/train/model" --target-set "$TARGET" \
    --tokenizer "$RUN/tokens/tokenizer.model" --start eos --block 256 --stride 128 --sample 400 --max-chars 4000 --epoch 25 --lr 0.5

step "3. score the corpus with the PreSelect classifier"
curate run configs/demo_preselect.yaml
curate query "$RUN" "SELECT domain, count(*) AS docs, round(avg(quality_preselect), 3) AS preselect FROM docs GROUP BY ALL ORDER BY preselect DESC"
