#!/usr/bin/env bash
# Quick start 1: set everything up and run the end-to-end demo on an embedded local Ray:
# corpus -> curation -> quality model -> mixture plan -> tokens -> continued pretraining.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
RUN=${RUN:-runs/demo}
MAX_MB=${MAX_MB:-8}
SEQ=256            # context of the tiny demo model
STEPS=${STEPS:-60} # optimizer steps; the plan below spans exactly these, so both phases train
BATCH=8            # rows per step
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. corpus: real text from this machine"
curate corpus system data/system.jsonl --max-mb "$MAX_MB"
step "2. curate: ingest, language ID, heuristic filters, domains, exact + MinHash dedup"
curate run configs/demo.yaml --out "$RUN"
step "3. quality classifier (DCLM-style): pydoc reference topics vs the rest of the corpus"
# A few hundred documents: fastText's defaults (5 epochs, lr 0.1) leave the model flat here.
curate train-quality "$RUN" --name ref --positive-sql "SELECT id, text FROM docs WHERE source = 'pydoc'" --epoch 25 --lr 0.5
curate run configs/demo_quality.yaml --out "$RUN"
step "4. catalog: what the run holds"
curate query "$RUN" "SELECT domain, quality_bucket, count(*) AS docs, sum(n_chars) AS chars FROM docs GROUP BY ALL ORDER BY chars DESC LIMIT 12"
step "5. mixture plan: 'Reuse, Don't Retrain' recipe, switch at LR = start/5"
# The recipe starts at the base model's minimum pretraining LR (3e-5 by default); the demo's base
# is random, so it starts higher to show a falling loss within a minute.
# `curate plan` estimates tokens with the run's tokenizer once one exists (step 6 trains it), so a
# second demo would plan differently and its training could not resume the first one's: the
# steps from here on start clean (the curated shards above are reused).
rm -rf "$RUN/plan.json" "$RUN/plan.png" "$RUN/tokens" "$RUN/base" "$RUN/train"
curate plan "$RUN" --recipe reuse --tokens $((STEPS * BATCH * SEQ)) --seq-len $SEQ --batch-size $BATCH --lr-start 3e-3
step "6. tokenize (sentencepiece trained on the run) and pack per mixture group"
# 5% of each group held out (the default 0.5% leaves a demo-sized group one document or none).
curate pack "$RUN" --seq-len $SEQ --vocab-size 4000 --eval-fraction 0.05
step "7. continued pretraining of a tiny random Llama, phase by phase"
curate init-model "$RUN/base" --size tiny --run "$RUN" --seq-len $SEQ
curate train "$RUN" --base "$RUN/base" --config configs/train_tiny.yaml --max-steps "$STEPS" \
    --set batch_tokens=$((BATCH * SEQ)) --set micro_batch_rows=$BATCH --set eval_every=20
step "8. evaluate: bits per byte on each group's held-out documents, a small QA set"
curate eval "$RUN/train/model" --run "$RUN" --qa configs/eval/python_qa.jsonl --block $SEQ --stride $((SEQ / 2))
step "9. summary"
curate stats "$RUN"
curate report "$RUN"
