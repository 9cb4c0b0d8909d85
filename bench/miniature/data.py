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
PRE = "pre"  # the PreSelect classifier's name: column quality_pre


def _digest(key: Any) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


def is_cached(out: Path, name: str, key: Any) -> bool:
    """Whether `cached(out, name, key, ...)` would return a kept result without running."""
    path = out / "_done" / f"{name}.json"
    return path.is_file() and json.loads(path.read_text()).get("key") == _digest(key)


def cached(out: Path, name: str, key: Any, fn: Callable[[], dict], echo: Callable[[str], None]) -> dict:
    """`fn()` once per `key`: its result is kept in OUT/_done/<name>.json and returned on reruns."""
    path = out / "_done" / f"{name}.json"
    digest = _digest(key)
    if is_cached(out, name, key):
        echo(f"[{name}] done before, skipped")
        return json.loads(path.read_text())["result"]
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
    held = with_choices(held, cfg.mc_choices, cfg.qa.salt)
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


def with_choices(items: list[tuple[str, dict]], k: int, salt: str) -> list[tuple[str, dict]]:
    """Items without choices get `k` of them: the answer and the k-1 other answers of the set with
    the lowest salted hash against the item, in an order by the same hash (deterministic, so every
    model is asked the same items; the distractors are held out too, never trained on)."""
    answers = sorted({it["answer"] for _, it in items})
    if k < 2 or len(answers) < k:
        return items
    out = []
    for key, it in items:
        if it.get("choices"):
            out.append((key, it))
            continue
        rank = lambda a: _hash_unit(f"{salt}:{key}:{a}")  # noqa: E731
        others = sorted((a for a in answers if a != it["answer"]), key=rank)[:k - 1]
        out.append((key, {**it, "choices": sorted([it["answer"], *others], key=rank)}))
    return out


def run_config(cfg: MiniatureConfig, out: Path, qa: dict, selectors: tuple[str, ...] = ()) -> Path:
    stages = [dict(s) for s in cfg.stages]
    # Held-out answers must not be trained on: documents sharing an n-gram with one are dropped.
    stages.append({"kind": "decontaminate", "n": cfg.decontaminate_n, "mode": "drop",
                   "sets": [{"name": "qa_held_out", "path": str(Path(qa["held_out_path"]).resolve()),
                             "fields": ["question", "answer"]}]})
    for name in selectors:
        stages.append({"kind": "quality", "name": f"quality_{name}", "model": f"models/quality_{name}.bin",
                       "bucket": False})
    inputs = [{"path": str(Path(p).resolve()), "source": None} for p in cfg.inputs]
    inputs.append({"path": str(Path(qa["train_path"]).resolve())})
    doc = {"name": "miniature", "out": str((out / "run").resolve()), "inputs": inputs, "stages": stages}
    if cfg.workers:
        doc["ray"] = {"workers": cfg.workers}
    path = out / f"run{''.join('_' + n for n in selectors)}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def curate(cfg: MiniatureConfig, out: Path, qa: dict, selectors: tuple[str, ...], executor: Any) -> dict:
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    rc = load_config(str(run_config(cfg, out, qa, selectors)))
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

    # the QA pairs the arms may train on: not those left out for quoting a held-out document
    _, _, clean = held_and_leaks(cfg, out / "run")
    sql = cfg.selection.positive_sql or f"SELECT id, text FROM docs WHERE source = '{cfg.qa.source}' AND {clean}"
    meta = train_quality(str(out / "run"), SEL, positive_sql=sql,
                         params=FastTextParams(epoch=cfg.selection.epoch, lr=cfg.selection.lr))
    return {k: meta[k] for k in ("model", "n_positives", "n_negatives") if k in meta} | {
        "heldout": meta.get("heldout") or meta.get("holdout"), "warnings": meta.get("warnings", [])}


def cells(cfg: MiniatureConfig, run: Path, echo, pre: bool = False) -> dict:
    """Disjoint groups: `qa`, and the rest split by target domain (tgt/gen), classifier pick (sel),
    PreSelect pick (pre, when `pre`) and random pick (rnd). Each predicate stands alone, so any
    arm's plan can name any subset of them, and one pack serves every arm. Training documents that
    share an n-gram with a held-out document are in no group (bench/miniature/leaks.py)."""
    from curate.pipeline.catalog.db import query

    t = f"coalesce(({cfg.target}), false)"
    held, leaks, clean = held_and_leaks(cfg, run)
    q = f"source = '{cfg.qa.source}' AND {clean}"
    pool = f"NOT (source = '{cfg.qa.source}') AND {clean}"
    for src, k in leaks["by_source"].items():
        echo(f"[leaks] {k} {src} training document(s) share a {cfg.decontaminate_n}-gram with a held-out "
             "document: left out of training")
    target_chars = int(query(run, f"SELECT coalesce(sum(n_chars), 0) AS c FROM docs WHERE {pool} AND {t}")["c"][0].as_py())
    if not target_chars:
        raise CurateError(f"target: `{cfg.target}` selects no documents of the curated run")
    budget = cfg.selection.mass_ratio * target_chars
    salt = cfg.selection.salt.replace("'", "''")
    orders = [(SEL, f"quality_{SEL} DESC, id"), ("rnd", f"md5(id || '{salt}')")]
    if pre:
        orders.insert(1, (PRE, f"quality_{PRE} DESC, id"))
    want = {SEL: {"c", "d"}, "rnd": {"c", "d"}, PRE: {"g"}}
    picks = {name: _pick(run, pool, order, budget, name) for name, order in orders if want[name] & set(cfg.arms)}
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
            "eval_where": held, "leaks": leaks}


def held_and_leaks(cfg: MiniatureConfig, run: Path) -> tuple[list[str], dict, str]:
    """The held-out document sets (pack's `name=SQL`), the training documents that share an n-gram
    with one, and the predicate that leaves those out."""
    from bench.miniature.leaks import training_leaks

    held = eval_where(cfg, f"NOT (source = '{cfg.qa.source}')", f"coalesce(({cfg.target}), false)")
    leaks = training_leaks(run, held, "true", cfg.decontaminate_n)
    clean = f"id NOT IN (SELECT unnest({_sql_list(leaks['ids'])}::VARCHAR[]))" if leaks["ids"] else "true"
    return held, leaks, clean


def _pick(run: Path, pool: str, order: str, budget: float, name: str) -> str:
    """The first documents of `pool` in `order` up to `budget` characters, as a predicate: the
    last kept row's sort key is the threshold."""
    from curate.pipeline.catalog.db import query

    rows = query(run, f"SELECT id, n_chars FROM docs WHERE {pool} ORDER BY {order}").to_pylist()
    keep, mass = [], 0
    for r in rows:
        if mass >= budget:
            break
        keep.append(r["id"])
        mass += r["n_chars"]
    key = order.split(" DESC")[0]
    agg = "min" if " DESC" in order else "max"
    last = query(run, f"SELECT {agg}({key}) AS m FROM docs WHERE id IN "
                      f"(SELECT unnest({_sql_list(keep)}::VARCHAR[]))")["m"][0].as_py()
    if " DESC" in order:
        return f"coalesce({key} >= {last!r}, false)"
    return f"{key} <= '{last}'"


def _sql_list(ids: list[str]) -> str:
    return "[" + ", ".join("'" + i.replace("'", "''") + "'" for i in ids) + "]"


def eval_where(cfg: MiniatureConfig, pool: str, t: str) -> list[str]:
    """Held-out target and general documents, fixed by a hash of the id whatever the arm's groups."""
    lo, hi = (f"{int(k * cfg.eval_fraction * 16 ** 8):08x}" for k in (1, 2))
    held = f"substr(md5(id || 'eval'), 1, 8) < '{lo}'"
    # a second slice, as large, for what is fitted or tuned (arm (f)'s search): never the test sets
    dev = f"substr(md5(id || 'eval'), 1, 8) >= '{lo}' AND substr(md5(id || 'eval'), 1, 8) < '{hi}'"
    return [f"target={pool} AND {t} AND {held}", f"general={pool} AND NOT {t} AND {held}",
            f"target_dev={pool} AND {t} AND {dev}", f"general_dev={pool} AND NOT {t} AND {dev}"]


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
