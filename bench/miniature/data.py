"""The miniature's data: corpus, QA split, curation with decontamination, the selection
classifier, the group cells every arm's plan is made of, and one pack for all arms."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import yaml

from bench.miniature.config import MiniatureConfig
from curate.pipeline.errors import CurateError

SEL = "sel"  # the selection classifier's name: column quality_sel


def cached(out: Path, name: str, key: Any, fn: Callable[[], dict], echo: Callable[[str], None]) -> dict:
    """`fn()` once per `key`: its result is kept in OUT/_done/<name>.json and returned on reruns."""
    path = out / "_done" / f"{name}.json"
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    if path.is_file():
        m = json.loads(path.read_text())
        if m.get("key") == digest:
            echo(f"[{name}] done before, skipped")
            return m["result"]
    result = fn()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": digest, "result": result}, indent=2, default=str))
    tmp.replace(path)
    return result


def build_corpus(cfg: MiniatureConfig, echo) -> dict:
    c = cfg.corpus
    if c.builder is None:
        missing = [p for p in [cfg.qa.path] if not Path(p).exists()]
        if missing:
            raise CurateError(f"qa.path: {missing[0]} does not exist (corpus.builder is null)")
        return {"builder": None}
    from curate.pipeline.commands.corpus_faq import build_faq_corpus

    echo(f"[corpus] building {c.dir} from this machine's documentation")
    r = build_faq_corpus(c.dir, c.general_mb, c.target_mb)
    for note in r["notes"]:
        echo(f"[corpus] {note}")
    return r


def _hash_unit(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) / 16 ** 15


def split_qa(cfg: MiniatureConfig, out: Path) -> dict:
    """Pairs whose salted id hash falls below `held_out_fraction` are held out (evaluation only);
    the rest become training documents of source `qa.source`."""
    from curate.training.evaluate import read_qa

    items = read_qa(cfg.qa.path)
    raw = [json.loads(line) for line in Path(cfg.qa.path).read_text().splitlines() if line.strip()]
    qdir = out / "qa"
    qdir.mkdir(parents=True, exist_ok=True)
    held, train = [], []
    for it, r in zip(items, raw):
        key = str(r.get("id") or it["question"])
        (held if _hash_unit(f"{cfg.qa.salt}:{key}") < cfg.qa.held_out_fraction else train).append((key, it))
    if not held or not train:
        raise CurateError(f"qa: {len(items)} pairs split into {len(train)} training and {len(held)} held out; "
                          "both must be non-empty (more pairs, or another held_out_fraction)")
    with open(qdir / "held_out.jsonl", "w") as f:
        for key, it in held:
            f.write(json.dumps({"id": key, **it}, ensure_ascii=False) + "\n")
    with open(qdir / "train_docs.jsonl", "w") as f:
        for key, it in train:
            f.write(json.dumps({"id": f"qa:{key}", "text": f"Question: {it['question']}\nAnswer: {it['answer']}",
                                "source": cfg.qa.source}, ensure_ascii=False) + "\n")
    return {"pairs": len(items), "train": len(train), "held_out": len(held),
            "held_out_path": str(qdir / "held_out.jsonl"), "train_path": str(qdir / "train_docs.jsonl"),
            "mc": sum(1 for _, it in held if it.get("choices"))}


def run_config(cfg: MiniatureConfig, out: Path, qa: dict, with_selector: bool) -> Path:
    stages = [dict(s) for s in cfg.stages]
    # Held-out answers must not be trained on: documents sharing an n-gram with one are dropped.
    stages.append({"kind": "decontaminate", "n": cfg.decontaminate_n, "mode": "drop",
                   "sets": [{"name": "qa_held_out", "path": str(Path(qa["held_out_path"]).resolve()),
                             "fields": ["answer"]}]})
    if with_selector:
        stages.append({"kind": "quality", "model": f"models/quality_{SEL}.bin", "bucket": False})
    inputs = [{"path": str(Path(p).resolve()), "source": None} for p in cfg.inputs]
    inputs.append({"path": str(Path(qa["train_path"]).resolve())})
    doc = {"name": "miniature", "out": str((out / "run").resolve()), "inputs": inputs, "stages": stages}
    if cfg.workers:
        doc["ray"] = {"workers": cfg.workers}
    path = out / ("run_selector.yaml" if with_selector else "run.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def curate(cfg: MiniatureConfig, out: Path, qa: dict, with_selector: bool, executor: Any) -> dict:
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    rc = load_config(str(run_config(cfg, out, qa, with_selector)))
    run_pipeline(rc, executor=executor)
    return decontamination(out / "run")


def decontamination(run: Path) -> dict:
    from curate.pipeline.catalog.db import query

    t = query(run, "SELECT reason, source, count(*) AS docs, sum(n_chars) AS chars FROM rejected "
                   "WHERE stage = 'decontaminate' GROUP BY ALL ORDER BY docs DESC").to_pylist()
    kept = query(run, "SELECT source, count(*) AS docs, sum(n_chars) AS chars FROM docs GROUP BY ALL ORDER BY chars DESC")
    ints = lambda rows: [{k: int(v) if k in ("docs", "chars") else v for k, v in r.items()} for r in rows]  # noqa: E731
    return {"dropped": ints(t), "dropped_docs": sum(int(r["docs"]) for r in t), "kept": ints(kept.to_pylist())}


def train_selector(cfg: MiniatureConfig, out: Path) -> dict:
    from curate.pipeline.commands.annotate import train_quality
    from curate.scorers.ft import FastTextParams

    sql = cfg.selection.positive_sql or f"SELECT id, text FROM docs WHERE source = '{cfg.qa.source}'"
    meta = train_quality(str(out / "run"), SEL, positive_sql=sql,
                         params=FastTextParams(epoch=cfg.selection.epoch, lr=cfg.selection.lr))
    return {k: meta[k] for k in ("model", "n_positives", "n_negatives") if k in meta} | {
        "heldout": meta.get("heldout") or meta.get("holdout"), "warnings": meta.get("warnings", [])}


def cells(cfg: MiniatureConfig, run: Path, echo) -> dict:
    """Disjoint groups: `qa`, and the rest split by target domain (tgt/gen), classifier pick (sel)
    and random pick (rnd). Each predicate stands alone, so any arm's plan can name any subset of
    them, and one pack serves every arm."""
    from curate.pipeline.catalog.db import query

    q = f"source = '{cfg.qa.source}'"
    t = f"coalesce(({cfg.target}), false)"
    pool = f"NOT ({q})"
    target_chars = int(query(run, f"SELECT coalesce(sum(n_chars), 0) AS c FROM docs WHERE {pool} AND {t}")["c"][0].as_py())
    if not target_chars:
        raise CurateError(f"target: `{cfg.target}` selects no documents of the curated run")
    picks = {}
    if {"c", "d"} & set(cfg.arms):
        budget = cfg.selection.mass_ratio * target_chars
        salt = cfg.selection.salt.replace("'", "''")
        for name, order in ((SEL, f"quality_{SEL} DESC, id"), ("rnd", f"md5(id || '{salt}')")):
            rows = query(run, f"SELECT id, n_chars FROM docs WHERE {pool} ORDER BY {order}").to_pylist()
            keep, mass = [], 0
            for r in rows:
                if mass >= budget:
                    break
                keep.append(r["id"])
                mass += r["n_chars"]
            # the pick as a predicate: the last kept row's sort key is the threshold
            if name == SEL:
                thr = query(run, f"SELECT min(quality_{SEL}) AS m FROM docs WHERE id IN "
                                 f"(SELECT unnest(?::VARCHAR[]))".replace("?", _sql_list(keep)))["m"][0].as_py()
                picks[name] = f"coalesce(quality_{SEL} >= {thr!r}, false)"
            else:
                last = query(run, f"SELECT max(md5(id || '{salt}')) AS m FROM docs WHERE id IN "
                                  f"(SELECT unnest(?::VARCHAR[]))".replace("?", _sql_list(keep)))["m"][0].as_py()
                picks[name] = f"md5(id || '{salt}') <= '{last}'"
    groups = [{"name": "qa", "where": q}]
    for tname, tp in (("tgt", t), ("gen", f"NOT {t}")):
        combos = [("", [])]
        for pname, pp in picks.items():
            combos = [(n + s, c + [p]) for n, c in combos for s, p in (("-" + pname, pp), ("", f"NOT {pp}"))]
        for suffix, conds in combos:
            groups.append({"name": tname + suffix, "where": " AND ".join([pool, tp, *conds])})
    counts = {}
    for g in groups:
        r = query(run, f"SELECT count(*) AS n, coalesce(sum(n_chars), 0) AS c FROM docs WHERE {g['where']}")
        counts[g["name"]] = {"n": int(r["n"][0].as_py()), "c": int(r["c"][0].as_py())}
    groups = [g for g in groups if counts[g["name"]]["n"] > 0]
    for g in groups:
        echo(f"[groups] {g['name']:<14} {counts[g['name']]['n']:>6,} docs {counts[g['name']]['c']:>12,} chars")
    return {"groups": groups, "counts": counts, "target_chars": target_chars, "picks": picks,
            "eval_where": eval_where(cfg, pool, t)}


def _sql_list(ids: list[str]) -> str:
    return "[" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + "]"


def eval_where(cfg: MiniatureConfig, pool: str, t: str) -> list[str]:
    """Held-out target and general documents, fixed by a hash of the id whatever the arm's groups."""
    thr = f"{int(cfg.eval_fraction * 16 ** 8):08x}"
    held = f"substr(md5(id || 'eval'), 1, 8) < '{thr}'"
    return [f"target={pool} AND {t} AND {held}", f"general={pool} AND NOT {t} AND {held}"]


def pack_all(cfg: MiniatureConfig, out: Path, groups: dict, executor: Any, echo) -> dict:
    from curate.mixtures.recipes import recipe_from_dict
    from curate.pipeline.commands.pack import pack
    from curate.pipeline.commands.plan import plan

    run = out / "run"
    recipe = recipe_from_dict({"name": "miniature-pack", "kind": "natural", "groups": groups["groups"],
                               "schedule": {"kind": "constant", "lr_start": 1e-3}, "max_epochs": 1e9})
    (out / "plans").mkdir(parents=True, exist_ok=True)
    plan(run, recipe, seq_len=cfg.model.seq_len, batch_size=cfg.train.batch_rows, out=out / "plans" / "_pack.json",
         plot=False, echo=None)
    res = pack(run, out / "plans" / "_pack.json", seq_len=cfg.model.seq_len, vocab_size=cfg.model.vocab_size,
               executor=executor, echo=echo, eval_fraction=0.0, eval_max_docs=cfg.eval_max_docs,
               eval_where=groups["eval_where"])
    index = json.loads((run / "tokens" / "index.json").read_text())
    return {"groups": {g: v["n_tokens"] for g, v in index["groups"].items()},
            "eval": index.get("eval", {}), "plan_problems": res.plan_problems}
