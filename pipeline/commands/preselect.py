"""`curate train-preselect`: a PreSelect classifier from a ladder of language models.

1. The ladder's performance on the target: given as numbers (`--perf`, e.g. from `curate eval`),
   or measured here as bits per byte on a target set (`--target-set`, the measure `curate eval`
   reports; lower bits per byte = better, so the performance is its negative).
2. A seeded sample of the run's documents (or of `--sql`) is scored with every ladder model,
   one model in memory at a time.
3. Predictive strength, labels, fastText and bucket thresholds: `scorers.preselect`, which also
   scores the ladder (`ladder_performance`, `score_ladder`).

The model is `RUN/models/quality_<name>.bin` (default name `preselect`), scored by the ordinary
`quality` stage into `quality_preselect` and `quality_bucket`; the per-document bits per byte,
strengths and labels are kept in `RUN/models/quality_<name>.scores.parquet` for inspection.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from curate.pipeline.errors import CurateError


def _sample(con, source: str, n: int, seed: int) -> list[tuple[str, str]]:
    """Up to `n` (id, text) rows of `source` in the order of a seeded hash of the id: the same
    draw for any thread count, which a REPEATABLE reservoir sample is not."""
    return con.execute(f"SELECT id, text FROM {source} WHERE text IS NOT NULL AND text <> '' "
                       f"ORDER BY hash(id || ?), id LIMIT ?", [f"seed{int(seed)}", int(n)]).fetchall()


def train_preselect(run_dir: str, ladder: list[str], perf: list[float] | None = None,
                    target_set: list[str] | None = None, name: str = "preselect", sample: int = 2000,
                    sql: str | None = None, tokenizer: str | None = None, start: str = "bos",
                    lower_is_better: bool = False, min_positives: int = 50, length_bins: int = 10,
                    holdout: float = 0.1, seed: int = 0, bucket_sample: int = 20000, block: int = 512,
                    stride: int = 256, batch_tokens: int = 8192, device: str = "auto",
                    max_chars: int | None = None, params=None) -> dict:
    """Train `RUN/models/quality_<name>.bin` from the ladder's predictive strength on sampled documents."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curate.pipeline.catalog.db import check_read_only, connect
    from curate.pipeline.commands.annotate import read_texts
    from curate.scorers import preselect

    if not name.replace("_", "").isalnum():
        raise CurateError(f"--name {name!r}: letters, digits and '_' only (it names the score column)")
    folders = [Path(m) for m in ladder]
    if len(folders) < 2:
        raise CurateError(f"--ladder: give at least 2 models, got {len(folders)}")
    for f in folders:
        if not (f / "config.json").is_file():
            raise CurateError(f"--ladder: {f} is not a model folder (no config.json)")
    if (perf is None) == (not target_set):
        raise CurateError("give the ladder's performance either as numbers (--perf) or as a target set (--target-set)")
    if sample < 8:
        raise CurateError(f"--sample {sample}: need at least 8 documents")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    if perf is not None:
        if len(perf) != len(folders):
            raise CurateError(f"--perf: {len(perf)} numbers for {len(folders)} ladder models")
        perf = [-p for p in perf] if lower_is_better else list(perf)
        target = "given"
    else:
        texts = read_texts(target_set)
        if not texts:
            raise CurateError(f"--target-set {target_set}: no documents")
        perf = preselect.ladder_performance(folders, texts, tokenizer, run_dir, block, stride, batch_tokens, device, start)
        target = {"files": [str(p) for p in target_set], "documents": len(texts), "measure": "-bits_per_byte"}
    timings["target_seconds"] = time.perf_counter() - t0
    if len(set(perf)) == 1:
        raise CurateError(f"every ladder model performs the same ({perf[0]}): the ladder ranks nothing")
    con = connect(run_dir)
    try:
        if sql:
            check_read_only(sql)
        rows = [(i, t) for i, t in _sample(con, f"({sql})" if sql else "docs", sample, seed) if t.strip()]
    except Exception as e:
        raise CurateError(f"sampling documents failed ({'--sql' if sql else 'docs'}): {e}") from None
    if len(rows) < 8:
        raise CurateError(f"only {len(rows)} documents to score; need at least 8")
    ids, texts = [r[0] for r in rows], [r[1] for r in rows]
    t1 = time.perf_counter()
    bpb = preselect.score_ladder(folders, texts, tokenizer, run_dir, block, stride, batch_tokens, device, start, max_chars)
    timings["score_seconds"] = time.perf_counter() - t1
    strength = preselect.predictive_strength(bpb, perf)
    bucket_texts = [t for _, t in _sample(con, "docs", bucket_sample, seed + 7)]
    model_path = Path(run_dir) / "models" / f"quality_{name}.bin"
    t2 = time.perf_counter()
    try:
        chosen = preselect.select_labels(strength, [len(t) for t in texts], min_positives=min_positives,
                                         length_bins=length_bins, seed=seed)
        meta = preselect.train_preselect(
            texts, strength, model_path, labels=chosen, params=params, holdout=holdout, seed=seed,
            bucket_texts=bucket_texts,
            extra_meta={"name": name, "ladder": [str(f) for f in folders], "performance": perf, "target": target,
                        "sample": {"documents": len(texts), "sql": sql, "seed": seed},
                        "window": {"block": block, "stride": stride, "start": start, "max_chars": max_chars},
                        "ladder_mean_bpb": [float(x) for x in np.nanmean(bpb, axis=0)]})
    except ValueError as e:
        raise CurateError(f"train-preselect: {e}") from None
    timings["train_seconds"] = time.perf_counter() - t2
    labels = np.zeros(len(texts), dtype=np.int8)
    labels[chosen.positives], labels[chosen.negatives] = 1, -1
    table = pa.table({"id": ids, "n_chars": [len(t) for t in texts], "strength": strength, "label": labels,
                      **{f"bpb_{i}": bpb[:, i] for i in range(len(folders))}})
    pq.write_table(table, model_path.with_suffix(".scores.parquet"))
    meta.update(model=str(model_path), timings={k: round(v, 3) for k, v in timings.items()})
    return meta


def _cli(a: argparse.Namespace) -> int:
    from curate.pipeline.commands.annotate import _params

    meta = train_preselect(a.run_dir, a.ladder, a.perf, a.target_set, a.name, a.sample, a.sql, a.tokenizer, a.start,
                           a.lower_is_better, a.min_positives, a.length_bins, a.holdout, a.seed, a.bucket_sample,
                           a.block, a.stride, a.batch_tokens, a.device, a.max_chars, _params(a))
    lab, h = meta["labels"], meta["heldout"]
    print(f"ladder performance {[round(p, 4) for p in meta['performance']]}; predictive strength over "
          f"{lab['documents']} documents: {meta['strength_histogram']}")
    print(f"labels: {lab['positives']} positives (S >= {lab['positive_cut']:.3f}), {lab['negatives']} negatives "
          f"(S <= {lab['negative_max_strength']:.3f}); length AUC {lab['length_auc_before']} -> {lab['length_auc_after']}")
    print(f"model {meta['model']}: held-out AUC {h['auc']:.3f}, F1 {h['f1']:.3f} ({h['n_pos']} pos, {h['n_neg']} neg); "
          f"score it with {{kind: quality, model: models/{Path(meta['model']).name}}} -> quality_{meta['name']}")
    for w in meta.get("warnings", []):
        print(f"curate train-preselect: warning: {w}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from curate.pipeline.commands.annotate import _ft_args

    p = sub.add_parser("train-preselect", help="train a PreSelect classifier from a ladder of models (predictive strength)",
                       description="PreSelect (Shum et al. 2025): documents on which the ladder's bits per byte rank the "
                                   "models as their target performance does are positives; a fastText classifier learns them.")
    p.add_argument("run_dir")
    p.add_argument("--ladder", nargs="+", required=True, help="model folders (curate checkpoints or HF Llama folders), 2 or more")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--perf", type=float, nargs="+", help="each model's performance on the target (higher is better)")
    g.add_argument("--target-set", nargs="+", help="target documents (JSONL with `text`, Parquet, text files): "
                                                   "performance = minus bits per byte on them")
    p.add_argument("--lower-is-better", action="store_true", help="--perf numbers are losses (lower is better)")
    p.add_argument("--name", default="preselect", help="model name: RUN/models/quality_<name>.bin (default preselect)")
    p.add_argument("--sample", type=int, default=2000, help="documents sampled and scored by every model (default 2000)")
    p.add_argument("--sql", help="sample from this query (id, text) instead of all of docs")
    p.add_argument("--tokenizer", help="one tokenizer (a Hugging Face folder, tokenizer.json or sentencepiece .model) "
                                       "for every ladder model (default: each folder's own, else the run's)")
    p.add_argument("--start", choices=["bos", "eos"], default="bos", help="token a document is scored after (eos: curate packing without --add-bos)")
    p.add_argument("--min-positives", type=int, default=50, help="fewer documents at S = 1: take the top S (default 50)")
    p.add_argument("--length-bins", type=int, default=10, help="length quantile bins for length-matched labels (1 = off)")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction for the AUC (default 0.1)")
    p.add_argument("--bucket-sample", type=int, default=20000, help="corpus documents sampled for bucket thresholds")
    p.add_argument("--block", type=int, default=512, help="tokens per scoring window")
    p.add_argument("--stride", type=int, default=256, help="tokens a window moves over a long document")
    p.add_argument("--batch-tokens", type=int, default=8192, help="padded tokens per forward pass")
    p.add_argument("--max-chars", type=int, help="score only the first characters of each sampled document")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda")
    _ft_args(p)
    p.set_defaults(func=_cli)
