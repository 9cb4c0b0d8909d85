"""`curate train-quality` and `curate train-domain`: fastText models trained on a run's catalog.

Models go to `RUN/models/<kind>_<name>.bin` with a JSON of their held-out metrics next to them;
a config names them for the scoring stages (`kind: quality`, `model: models/quality_<name>.bin`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

import pyarrow as pa
import yaml

from curate.pipeline.catalog.db import columns
from curate.pipeline.errors import CurateError
from curate.scorers.buckets import DEFAULT_QUANTILES
from curate.scorers.ft import FastTextParams


def read_texts(paths: list[str]) -> list[str]:
    """Documents from files: JSONL(.gz) records with `text`, Parquet with a `text` column, or any
    other file as one document. Directories are read recursively."""
    texts: list[str] = []
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files.append(p)
        else:
            raise CurateError(f"reference file {p} does not exist")
    for f in files:
        name = f.name.lower()
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            texts += [t for t in pq.read_table(f, columns=["text"]).column("text").to_pylist() if t]
        elif name.endswith((".jsonl", ".jsonl.gz", ".json.gz", ".ndjson")):
            opener = gzip.open if name.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8", errors="replace") as fh:
                for i, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            texts.append(json.loads(line)["text"])
                        except (json.JSONDecodeError, KeyError, TypeError):
                            raise CurateError(f"{f}:{i}: expected a JSON object with a `text` field") from None
        else:
            raw = gzip.open(f).read() if name.endswith(".gz") else f.read_bytes()
            texts.append(raw.decode("utf-8", errors="replace"))
    return [t for t in texts if t and t.strip()]


def sample_texts(con, n: int, seed: int, where: str = "") -> list[str]:
    """Up to `n` non-empty texts of `docs` that satisfy `where`, drawn after that filter.

    DuckDB's `USING SAMPLE` samples the table before the WHERE, so it returned fewer than `n`
    while more were eligible; and a REPEATABLE reservoir is repeatable only on one thread. The
    draw is the order of a seeded hash of the id instead: the same for any thread count."""
    cond = f"({where}) AND " if where else ""
    return [r[0] for r in con.execute(
        f"SELECT text FROM docs WHERE {cond}text IS NOT NULL AND text <> '' ORDER BY hash(id || ?), id LIMIT ?",
        [f"seed{int(seed)}", int(n)]).fetchall()]


def quality_examples(run_dir: str, positive_files: list[str] | None = None, positive_sql: str | None = None,
                     negatives: int | None = None, seed: int = 0,
                     bucket_sample: int = 20000) -> tuple[list[str], list[str], list[str]]:
    """(positives, negatives, bucket sample) for `train_quality`: positives from files or SQL,
    negatives drawn from the `docs` outside them, the bucket sample from all of `docs`."""
    from curate.pipeline.catalog.db import check_read_only, connect

    if bool(positive_files) == bool(positive_sql):
        raise CurateError("give the positives either as files (--positive-files) or as SQL (--positive-sql), not both")
    con = connect(run_dir)
    if positive_sql:
        try:
            check_read_only(positive_sql)
            rel = con.sql(positive_sql)
        except Exception as e:
            raise CurateError(f"--positive-sql failed: {e}") from None
        if "text" not in rel.columns:
            raise CurateError(f"--positive-sql must return a `text` column; it returns {rel.columns}")
        key = "id" if "id" in rel.columns else "text"
        positives = [r[0] for r in con.execute(f"SELECT text FROM ({positive_sql})").fetchall() if r[0]]
        exclude = f"{key} NOT IN (SELECT {key} FROM ({positive_sql}) WHERE {key} IS NOT NULL)"
    else:
        positives = read_texts(positive_files or [])
        con.register("_positives", pa.table({"text": positives}))
        exclude = "text NOT IN (SELECT text FROM _positives)"
    if len(positives) < 4:
        raise CurateError(f"only {len(positives)} positive documents; need at least 4")
    if negatives is not None and negatives < 4:
        raise CurateError(f"--negatives {negatives}: need at least 4 (leave it out for as many as positives)")
    negs = sample_texts(con, negatives if negatives is not None else len(positives), seed, exclude)
    if len(negs) < 4:
        raise CurateError(f"only {len(negs)} negative documents in the corpus outside the positives; need at least 4")
    bucket_texts = sample_texts(con, bucket_sample, seed + 7)
    con.close()
    return positives, negs, bucket_texts


def train_quality(run_dir: str, name: str, positive_files: list[str] | None = None, positive_sql: str | None = None,
                  negatives: int | None = None, holdout: float = 0.1, seed: int = 0,
                  params: FastTextParams | None = None, quantiles: list[float] | None = None,
                  bucket_sample: int = 20000) -> dict:
    """Train `RUN/models/quality_<name>.bin`: positives from files or SQL, negatives sampled from `docs`.
    A flat model is saved with a `warnings` entry (the CLI prints it)."""
    from curate.scorers import quality

    if not name.replace("_", "").isalnum():
        raise CurateError(f"--name {name!r}: letters, digits and '_' only (it names the score column)")
    positives, negs, bucket_texts = quality_examples(run_dir, positive_files, positive_sql, negatives, seed,
                                                     bucket_sample)
    model_path = Path(run_dir) / "models" / f"quality_{name}.bin"
    try:
        meta = quality.train_quality(
            positives, negs, model_path, params=params, holdout=holdout, seed=seed, bucket_texts=bucket_texts,
            quantiles=quantiles or DEFAULT_QUANTILES,
            extra_meta={"name": name, "positives": positive_sql or [str(p) for p in positive_files or []],
                        "n_positives": len(positives), "n_negatives": len(negs)})
    except ValueError as e:
        raise CurateError(f"train-quality: {e}") from None
    meta["model"] = str(model_path)
    return meta


def _run_taxonomy(run_dir: str) -> list:
    """The taxonomy of the run's domain stage (RUN/config.yaml), else the default one."""
    from curate.scorers.domain import DomainRule, default_taxonomy

    cfg_path = Path(run_dir) / "config.yaml"
    stages = (yaml.safe_load(cfg_path.read_text()) or {}).get("stages") or [] if cfg_path.is_file() else []
    for st in stages:
        if isinstance(st, dict) and st.get("kind") == "domain" and st.get("taxonomy"):
            return [DomainRule(**r) for r in st["taxonomy"]]
    return default_taxonomy()


def _cap_per_label(rows, max_per_label: int, seed: int) -> list[tuple[str, str]]:
    by: dict[str, list[str]] = {}
    for lab, text in rows:
        if text:
            by.setdefault(str(lab), []).append(text)
    out = []
    for lab in sorted(by):
        texts = by[lab]
        random.Random(seed).shuffle(texts)
        out += [(lab, t) for t in texts[:max_per_label]]
    return out


def _rule_seeds(con, run_dir: str, max_per_label: int, seed: int, batch: int = 2000) -> list[tuple[str, str]]:
    """Documents a taxonomy rule labels, up to `max_per_label` each, in a seeded random order.

    The rules are applied here rather than trusting `domain_score = 1`: a tagger's float32
    probability can round to 1.0 too. In a run with a domain stage only documents it scored 1.0
    are candidates and the rule must agree with its label; documents stream in batches, in the
    order of a seeded hash of their id, until every domain has its seeds.
    """
    from curate.scorers.domain import RuleTagger

    taxonomy = _run_taxonomy(run_dir)
    tagger = RuleTagger(taxonomy)
    cols = columns(con)
    tagged = "domain" in cols and "domain_score" in cols
    where = "WHERE domain_score >= 1.0" if tagged else ""
    stored = "domain" if tagged else "NULL"
    cur = con.execute(f"SELECT text, source, url, {stored} FROM docs {where} "
                      f"ORDER BY hash(id || ?), id", [f"seed{int(seed)}"])
    by: dict[str, list[str]] = {r.name: [] for r in taxonomy}
    while any(len(v) < max_per_label for v in by.values()):
        rows = cur.fetchmany(batch)
        if not rows:
            break
        for text, source, url, label in rows:
            lab = tagger.tag_one(text, source, url) if text else None
            if lab is not None and (not tagged or lab == label) and len(by[lab]) < max_per_label:
                by[lab].append(text)
    return [(lab, t) for lab in sorted(by) for t in by[lab]]


def domain_seeds(run_dir: str, labels: str = "rules", label_sql: str | None = None, max_per_label: int = 2000,
                 seed: int = 0) -> list[tuple[str, str]]:
    """(label, text) seeds, at most `max_per_label` per label: from `label_sql` (columns text,
    label), a JSONL file of {text, label}, or `rules` (documents the run's taxonomy rules label)."""
    from curate.pipeline.catalog.db import connect

    if max_per_label < 1:
        raise CurateError(f"--max-per-label {max_per_label}: must be at least 1")
    con = connect(run_dir)
    if label_sql:
        # The cap is applied inside DuckDB: only the seeds' texts ever reach Python.
        return _cap_per_label(con.execute(
            f"SELECT label, text FROM ({label_sql}) WHERE label IS NOT NULL AND text IS NOT NULL AND text <> '' "
            f"QUALIFY row_number() OVER (PARTITION BY label ORDER BY hash(text || ?), text) <= ?",
            [f"seed{int(seed)}", int(max_per_label)]).fetchall(), max_per_label, seed)
    if labels != "rules":
        rows = []
        for i, line in enumerate(Path(labels).read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rec = json.loads(line)
                    rows.append((rec["label"], rec["text"]))
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise CurateError(f"{labels}:{i}: expected a JSON object with `text` and `label`") from None
        return _cap_per_label(rows, max_per_label, seed)
    return _rule_seeds(con, run_dir, max_per_label, seed)


def train_domain(run_dir: str, name: str, labels: str = "rules", label_sql: str | None = None,
                 max_per_label: int = 2000, holdout: float = 0.2, seed: int = 0,
                 params: FastTextParams | None = None) -> dict:
    """Train `RUN/models/domain_<name>.bin`; held-out accuracy and `RUN/plots/domain_<name>_confusion.png`."""
    from curate.scorers.domain import plot_confusion, train_domain as fit

    seeds = domain_seeds(run_dir, labels, label_sql, max_per_label, seed)
    model_path = Path(run_dir) / "models" / f"domain_{name}.bin"
    try:
        meta = fit(seeds, model_path, params=params, holdout=holdout, seed=seed, extra_meta={"name": name})
    except ValueError as e:
        raise CurateError(f"train-domain: {e}") from None
    png = plot_confusion(meta["heldout"]["confusion"], meta["labels"], Path(run_dir) / "plots" / f"domain_{name}_confusion.png",
                         title=f"domain_{name}: held-out accuracy {meta['heldout']['accuracy']:.3f}")
    meta.update(model=str(model_path), confusion_png=str(png))
    return meta


def _params(a: argparse.Namespace) -> FastTextParams:
    try:
        return FastTextParams(wordNgrams=a.word_ngrams, dim=a.dim, epoch=a.epoch, lr=a.lr, bucket=a.bucket)
    except ValueError as e:
        raise CurateError(str(e)) from None


def _ft_args(p: argparse.ArgumentParser, epoch: int = 5, lr: float = 0.1) -> None:
    p.add_argument("--word-ngrams", type=int, default=2, help="fastText wordNgrams (default 2)")
    p.add_argument("--dim", type=int, default=100, help="embedding size (default 100)")
    p.add_argument("--epoch", type=int, default=epoch, help=f"epochs (default {epoch})")
    p.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr})")
    p.add_argument("--bucket", type=int, default=200_000, help="n-gram hash buckets (default 200000)")
    p.add_argument("--seed", type=int, default=0)


def _cli_quality(a: argparse.Namespace) -> int:
    meta = train_quality(a.run_dir, a.name, a.positive_files, a.positive_sql, a.negatives, a.holdout, a.seed,
                         _params(a), a.quantiles, a.bucket_sample)
    h = meta["heldout"]
    print(f"model {meta['model']}: held-out precision {h['precision']:.3f} recall {h['recall']:.3f} "
          f"f1 {h['f1']:.3f} auc {h['auc']:.3f} ({h['n_pos']} pos, {h['n_neg']} neg)")
    print(f"bucket thresholds {[round(t, 4) for t in meta['bucket_thresholds']]} "
          f"(char quantiles {meta['bucket_quantiles']}); metrics in {Path(meta['model']).with_suffix('.json')}")
    for w in meta.get("warnings", []):
        print(f"curate train-quality: warning: {w}", file=sys.stderr)
    return 0


def _cli_domain(a: argparse.Namespace) -> int:
    meta = train_domain(a.run_dir, a.name, a.labels, a.label_sql, a.max_per_label, a.holdout, a.seed, _params(a))
    print(f"model {meta['model']}: held-out accuracy {meta['heldout']['accuracy']:.3f} on {meta['heldout']['n']} "
          f"documents, labels {meta['labels']}; confusion matrix {meta['confusion_png']}")
    for w in meta.get("warnings", []):
        print(f"curate train-domain: warning: {w}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train-quality", help="train a fastText quality classifier (DCLM-style) on a run's catalog")
    p.add_argument("run_dir")
    p.add_argument("--name", required=True, help="model name: RUN/models/quality_<name>.bin, column quality_<name>")
    p.add_argument("--positive-files", nargs="+", help="reference documents: JSONL(.gz) with `text`, Parquet, or text files")
    p.add_argument("--positive-sql", help="reference documents as SQL over the catalog, e.g. \"SELECT id, text FROM docs WHERE source = 'pydoc'\"")
    p.add_argument("--negatives", type=int, help="corpus documents sampled as negatives (default: as many as positives)")
    p.add_argument("--holdout", type=float, default=0.1, help="held-out fraction for precision/recall (default 0.1)")
    p.add_argument("--quantiles", type=float, nargs="+", help=f"bucket char quantiles (default {list(DEFAULT_QUANTILES)})")
    p.add_argument("--bucket-sample", type=int, default=20000, help="corpus documents sampled for bucket thresholds")
    _ft_args(p)
    p.set_defaults(func=_cli_quality)

    p = sub.add_parser("train-domain", help="train a fastText domain tagger from labelled seeds; accuracy + confusion PNG")
    p.add_argument("run_dir")
    p.add_argument("--name", default="tagger", help="model name: RUN/models/domain_<name>.bin")
    p.add_argument("--labels", default="rules", help="`rules` (default: rule-tagged documents) or a JSONL file of {text, label}")
    p.add_argument("--label-sql", help="seeds as SQL returning `text` and `label` columns")
    p.add_argument("--max-per-label", type=int, default=2000, help="cap per label, to balance the classes")
    p.add_argument("--holdout", type=float, default=0.2, help="held-out fraction (stratified per label)")
    _ft_args(p, epoch=25, lr=0.5)
    p.set_defaults(func=_cli_domain)
