#!/usr/bin/env bash
# Quick start 1: set everything up and run the end-to-end demo on an embedded local Ray:
# corpus -> curation -> quality model -> mixture plan -> tokens -> a tiny base pretrained on the
# general groups -> that base continued with the reuse plan -> bits per byte before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
RUN=${RUN:-runs/demo}
MAX_MB=${MAX_MB:-8}
SEQ=256            # context of the tiny demo model
STEPS=${STEPS:-60} # optimizer steps of the continued pretraining; its plan spans exactly these
BATCH=8            # rows per step
BASE=$RUN/pretrained           # the base model: pretrained once, reused by later demos on this run
BASE_STEPS=${BASE_STEPS:-200}  # its optimizer steps on the general groups
BASE_LR=3e-3       # its peak LR (a random init of this size learns fast at it) ...
BASE_LR_MIN=3e-4   # ... and its final one, where the reuse recipe starts
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. corpus: real text from this machine"
curate corpus system data/system.jsonl --max-mb "$MAX_MB"
# A few web pages as a site serves them: the kernel's HTML documentation where linux-doc is
# installed (configs/demo.yaml reads them with `format: html`; without them it says it skips them).
curate corpus kernel-html data/kernel-docs --pages 20
step "2. curate: ingest (JSONL, HTML pages), language ID, heuristic filters, domains, exact + MinHash dedup"
# On the embedded local Ray, as a cluster would run it: by default (`--executor auto`) an input
# this small would run in this process, since starting Ray costs more than it saves here.
curate run configs/demo.yaml --out "$RUN" --executor ray
python - "$RUN" data/kernel-docs <<'PY'
import sys
from curate.pipeline.catalog.db import query
run, folder = sys.argv[1], sys.argv[2]
mine = f"LIKE '{folder}/%'"
n = query(run, f"SELECT (SELECT count(*) FROM ingest WHERE input_path {mine}) AS docs, (SELECT count(*) FROM "
               f"quarantine WHERE path {mine}) AS quarantined, (SELECT count(*) FROM docs WHERE input_path {mine}) AS kept"
          ).to_pylist()[0]
if not n["docs"] + n["quarantined"]:
    print(f"HTML extraction: no pages in {folder} (linux-doc is not installed): skipped")
    sys.exit()
print(f"HTML extraction ({folder}, format: html): {n['docs'] + n['quarantined']} pages in -> {n['docs']} documents "
      f"({n['quarantined']} quarantined), {n['kept']} kept by the filters and dedup. One of them:")
ex = query(run, f"SELECT url, meta->>'$.title' AS title, text FROM ingest WHERE input_path {mine} "
                f"ORDER BY n_chars LIMIT 1").to_pylist()[0]
print(f"  url: {ex['url']}\n  title: {ex['title']}")
print("\n".join("  | " + line for line in ex["text"].splitlines()[:12]))
PY
step "3. quality classifier (DCLM-style): pydoc reference topics vs the rest of the corpus"
# A few hundred documents: fastText's defaults (5 epochs, lr 0.1) leave the model flat here.
curate train-quality "$RUN" --name ref --positive-sql "SELECT id, text FROM docs WHERE source = 'pydoc'" --epoch 25 --lr 0.5
curate run configs/demo_quality.yaml --out "$RUN"
step "4. catalog: what the run holds"
curate query "$RUN" "SELECT domain, quality_bucket, count(*) AS docs, sum(n_chars) AS chars FROM docs GROUP BY ALL ORDER BY chars DESC LIMIT 12"
step "5. mixture plan: 'Reuse, Don't Retrain' recipe, switch at LR = start/5"
# The recipe starts at the base model's minimum pretraining LR: the base of step 7 ends at
# BASE_LR_MIN. `curate plan` estimates tokens with the run's tokenizer once one exists (step 6
# trains it), so a second demo would plan differently and its training could not resume the
# first one's: the steps from here on start clean (the curated shards above are reused).
rm -rf "$RUN/plan.json" "$RUN/plan.png" "$RUN/tokens" "$RUN/base" "$RUN/train"
curate plan "$RUN" --recipe reuse --tokens $((STEPS * BATCH * SEQ)) --seq-len $SEQ --batch-size $BATCH --lr-start $BASE_LR_MIN
step "6. tokenize (sentencepiece trained on the run) and pack per mixture group"
# A base cached by an earlier demo is kept while the corpus, the configs and its settings are
# the same; its embeddings index its own tokenizer's ids, so the run is packed with that one.
KEY=$(cat data/system.jsonl $(find data/kernel-docs -name '*.html' 2>/dev/null | sort) configs/demo.yaml \
      configs/demo_quality.yaml configs/recipes/reuse.yaml <(echo "$BASE_STEPS $BASE_LR $BASE_LR_MIN $SEQ $BATCH") \
      | md5sum | cut -c1-32)
if [ -f "$BASE/model/config.json" ] && [ "$(cat "$BASE/key" 2>/dev/null)" = "$KEY" ]; then
  TOKENIZER=(--tokenizer "$BASE/model")
else
  rm -rf "$BASE"
  TOKENIZER=(--vocab-size 4000)
fi
# 5% of each group held out (the default 0.5% leaves a demo-sized group one document or none).
curate pack "$RUN" --seq-len $SEQ "${TOKENIZER[@]}" --eval-fraction 0.05
step "7. the base: a tiny random Llama pretrained on the general groups only (cached in $BASE)"
# The random init stays in RUN/base (scripts/demo_model.sh ranks it in its ladder of models).
curate init-model "$RUN/base" --size tiny --run "$RUN" --seq-len $SEQ
if [ -f "$BASE/key" ]; then
  echo "reusing $BASE/model (rm -rf $BASE to pretrain it again)"
else
  # One phase over the reuse recipe's groups (so the packed tokens serve both plans): the
  # general and high-quality groups at equal weights (an empty one's share goes to the others),
  # the target and QA groups at none, so what step 8 adds is new to the base.
  mkdir -p "$BASE"
  python - "$BASE/recipe.yaml" "$BASE_LR" "$BASE_LR_MIN" <<'PY'
import sys, yaml
reuse = yaml.safe_load(open("configs/recipes/reuse.yaml"))
general = [g for role in ("general", "high_quality") for g in reuse["roles"].get(role, [])]
lr, lr_min = float(sys.argv[2]), float(sys.argv[3])
recipe = {"name": "pretrain-general", "kind": "custom", "description": "the demo's base: general groups only",
          "schedule": {"kind": "cosine", "lr_start": lr, "lr_end": lr_min, "warmup_fraction": 0.05},
          "allow_redistribute": True, "max_epochs": 4.0, "roles": reuse["roles"], "groups": reuse["groups"],
          "phases": [{"name": "pretrain", "weights": {g: 1 / len(general) for g in general}}]}
yaml.safe_dump(recipe, open(sys.argv[1], "w"), sort_keys=False)
PY
  curate plan "$RUN" --recipe "$BASE/recipe.yaml" --tokens $((BASE_STEPS * BATCH * SEQ)) --seq-len $SEQ \
      --batch-size $BATCH --out "$BASE/plan.json" --no-plot
  curate train "$RUN" --base "$RUN/base" --plan "$BASE/plan.json" --out "$BASE" --config configs/train_tiny.yaml \
      --set batch_tokens=$((BATCH * SEQ)) --set micro_batch_rows=$BATCH --set eval_every=0 --set checkpoint_every=0
  echo "$KEY" > "$BASE/key"
fi
step "8. continued pretraining of the base with the reuse plan, phase by phase"
curate train "$RUN" --base "$BASE/model" --config configs/train_tiny.yaml --max-steps "$STEPS" \
    --set batch_tokens=$((BATCH * SEQ)) --set micro_batch_rows=$BATCH --set eval_every=20
step "9. evaluate: bits per byte on each group's held-out documents, a small QA set"
EVAL=(--run "$RUN" --qa configs/eval/python_qa.jsonl --block $SEQ --stride $((SEQ / 2)))
curate eval "$BASE/model" "${EVAL[@]}" --out "$BASE/eval"
curate eval "$RUN/train/model" "${EVAL[@]}"
step "10. before and after continuing: the base vs the continued model"
python - "$RUN/plan.json" "$BASE/eval/eval.json" "$RUN/train/model/eval.json" <<'PY'
import json, sys
roles = {g["name"]: g["role"] for g in json.load(open(sys.argv[1]))["groups"]}
base, cont = (json.load(open(p)) for p in sys.argv[2:])
sets = [n for n in roles if base["sets"].get(n, {}).get("bytes")]  # groups with held-out text
target = [n for n in sets if roles[n] == "target"]
general = [n for n in sets if roles[n] in ("general", "high_quality")]
def bpb(ev, names):  # the sets' bits over their bytes: one figure for several sets
    return sum(ev["sets"][n]["bits"] for n in names) / sum(ev["sets"][n]["bytes"] for n in names)
docs = lambda names: sum(base["sets"][n].get("docs", 0) for n in names)
rows = [(f"{role} ({'+'.join(names)})", bpb(base, names), bpb(cont, names), docs(names))
        for role, names in (("target", target), ("general", general)) if names]
rows += [(f"  {n} ({roles[n]})", bpb(base, [n]), bpb(cont, [n]), docs([n])) for n in sets]
rows += [(f"QA answers ({n})", q["answer_bpb"], cont["qa"][n]["answer_bpb"], q["items"]) for n, q in base["qa"].items()]
# A demo-sized held-out set is a handful of documents: its change is one draw, not a finding.
# Rows under SMALL documents (or QA items) are marked; the recipe miniature compares mixtures
# over seeds with paired tests (bench/recipe_miniature.py). A figure that is not a number is not printed.
SMALL = 30
print(f"{'bits per byte, held-out':<36} {'base':>7} {'continued':>10} {'change':>8} {'n':>5}")
for label, b, c, n in rows:
    if b is None or c is None or b != b or c != c or not b:
        continue
    mark = "  indicative only" if n < SMALL else ""
    print(f"{label:<36} {b:7.3f} {c:10.3f} {100 * (c - b) / b:+7.1f}% {n:5d}{mark}")
print(f"n: held-out documents (QA: items). Rows under {SMALL} are one small draw: for a comparison that decides")
print("anything, run the recipe miniature (python bench/recipe_miniature.py --config configs/miniature.yaml).")
PY
step "11. summary"
curate stats "$RUN"
curate report "$RUN"
