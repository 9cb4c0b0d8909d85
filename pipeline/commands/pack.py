"""`curate pack RUN_DIR`: tokenize the latest stage's documents and pack them per mixture group.

Steps, each resumable through markers:
  1. tokenizer: `--tokenizer` (a .model or a Hugging Face folder with tokenizer.model), else the
     run's earlier `tokens/tokenizer.model`, else a new one trained on a sample of the run;
     saved as `RUN/tokens/tokenizer.model`.
  2. `tokenize` stage on Ray, one task per shard: group assignment (the plan's first-match
     CASE, DuckDB), exact `n_tokens`; `stages.json` gains "tokenize" so the catalog's `docs`
     view has `n_tokens` and `group`.
  3. per group, a Ray task: Megatron `.bin/.idx`, packed rows, segments, meta.json.
  4. `tokens/index.json` and the plan re-checked with exact token counts.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import pyarrow.parquet as pq

from pipeline.errors import CurateError
from pipeline.catalog.eval_sets import EVAL_DIR, check_names, parse_extra, write_extra
from pipeline.catalog.eval_sets import write_index as write_eval_index
from pipeline.running.lock import holds_run_lock
from stages import shardio
from stages.base import Executor
from stages.packing import GroupTask, PackConfig, pack_group
from stages.tokenize import (STAGE, TokenizeTask, TokenizerConfig, assign_groups, resolve_model_path,
                             sample_texts, tokenize_shard, tokenizer_info, train_tokenizer)

ALL_GROUP = "all"
TOKENIZER_TASK = "_tokenizer"  # marker tokens/_done/_tokenizer.json; group names never start with "_"


@dataclass
class PackResult:
    """What `pack` did: per-group figures as in tokens/index.json, and plan problems if any."""

    index: dict
    plan_problems: list[str] = field(default_factory=list)


def _input_parts(run: Path) -> tuple[str, list[Path]]:
    """The latest stage before tokenize that has shards, and its shards."""
    from pipeline.catalog.db import read_stage_names

    for name in reversed([n for n in read_stage_names(run) if n != STAGE]):
        parts = sorted((run / name).glob("*.parquet"))
        if parts:
            return name, parts
    raise CurateError(f"{run} has no stage with shards to tokenize; run `curate run CONFIG` first")


def _groups(plan: dict | None) -> tuple[list[dict], str]:
    """The plan's groups (first-match order) and the SQL giving each document its group."""
    if plan is None:
        return [{"name": ALL_GROUP, "where": "TRUE"}], f"'{ALL_GROUP}'"
    from mixtures.groups import GroupError, group_case_sql, parse_groups

    try:
        groups = parse_groups([{"name": g.get("name"), "where": g.get("where")} for g in plan.get("groups", [])],
                              "plan.json groups")
    except GroupError as e:
        raise CurateError(str(e)) from None
    return [g for g in plan["groups"]], group_case_sql(groups)


def _tokenizer(run: Path, parts: list[Path], given: str | None, cfg: TokenizerConfig, explicit: bool,
               echo: Callable) -> Path:
    """Resolve, reuse or train the tokenizer; returns RUN/tokens/tokenizer.model."""
    out = run / "tokens" / "tokenizer.model"
    tokens_dir = run / "tokens"
    marker = shardio.read_marker(tokens_dir, TOKENIZER_TASK)
    if given:
        try:
            src = resolve_model_path(given)
            tokenizer_info(src)  # fail early on a file that is not a usable model
        except (OSError, ValueError) as e:
            raise CurateError(f"--tokenizer: {e}") from None
        digest = shardio.file_digest(src)
        if not out.exists() or shardio.file_digest(out) != digest:
            shardio.atomic_write_bytes(out, src.read_bytes())
        shardio.write_marker(tokens_dir, TOKENIZER_TASK, {"stage": "tokenizer", "source": str(src),
                                                       "input_fingerprint": digest, "config_hash": "given"})
        return out
    train_hash = shardio.stable_hash(asdict(cfg))
    if out.exists() and marker:
        # Reuse the run's tokenizer unless training options were asked for that it was not trained
        # with: a tokenizer change re-encodes everything, so it never happens implicitly.
        if not explicit or marker.get("config_hash") == train_hash:
            return out
    echo(f"training a {cfg.model_type} tokenizer (vocab {cfg.vocab_size}) on up to {cfg.train_chars:,} characters")
    try:
        train_tokenizer(sample_texts(parts, cfg.train_chars), cfg, out)
    except ValueError as e:
        raise CurateError(str(e)) from None
    shardio.write_marker(tokens_dir, TOKENIZER_TASK, {"stage": "tokenizer", "source": "trained",
                                                   "config_hash": train_hash,
                                                   "config": asdict(cfg)})
    return out


def _check_group_sql(part: Path, case_sql: str) -> None:
    """Fail before any work when a group predicate does not run on the shards' columns: the
    same query tokenize_shard runs, on an empty table of the shard's schema."""
    empty = pq.read_schema(part).empty_table()
    empty = empty.drop_columns([c for c in ("n_tokens", "group") if c in empty.column_names])  # as tokenize_shard
    try:
        assign_groups(empty, case_sql)
    except ValueError as e:
        raise CurateError(f"plan.json groups: a `where` predicate does not run on {part.parent.name} shards: {e}") from None


def _update_stages_json(run: Path) -> None:
    from pipeline.catalog.db import read_stage_names

    names = [n for n in read_stage_names(run) if n != STAGE] + [STAGE]
    shardio.atomic_write_json(run / "stages.json", names)


def _remove_stale(stage_dir: Path, keep: set[str]) -> None:
    """Shards of an earlier tokenize whose input shard no longer exists would haunt the catalog."""
    for p in list(stage_dir.glob("*.parquet")) + list((stage_dir / "_ids").glob("*.bin")) + \
            list((stage_dir / "_done").glob("*.json")):
        if p.stem not in keep:
            p.unlink()


def _remove_stale_groups(tokens_dir: Path, keep: set[str]) -> None:
    """Token folders of groups an earlier plan had: the trainer must not mistake them for current ones."""
    import shutil

    for d in tokens_dir.iterdir():
        if d.is_dir() and not d.name.startswith("_") and d.name not in keep and (d / "meta.json").exists():
            shutil.rmtree(d)
            shardio.marker_path(tokens_dir, d.name).unlink(missing_ok=True)


def check_plan(plan: dict, groups: dict[str, dict]) -> list[str]:
    """Problems of the plan under exact counts: a group asked for more than tokens x max_epochs."""
    problems = []
    for g in plan.get("groups", []):
        name = g.get("name")
        have = groups.get(name, {}).get("n_tokens", 0)
        want = g.get("requested_tokens")
        max_epochs = g.get("max_epochs")
        if want is None or max_epochs is None:
            continue
        if want > have * max_epochs:
            problems.append(f"group {name!r} requests {want:,} tokens but has {have:,} exact tokens "
                            f"(x {max_epochs} max epochs = {int(have * max_epochs):,})")
    return problems


@holds_run_lock("curate pack")
def pack(run_dir: str | Path, plan: str | Path | None = None, tokenizer: str | None = None,
         packing: str = "best-fit", seq_len: int | None = None, vocab_size: int | None = None,
         seed: int = 0, add_bos: bool = False, workers: int | None = None, address: str | None = None,
         tokenizer_config: TokenizerConfig | None = None, executor: Executor | None = None,
         echo: Callable[[str], None] = print, eval_fraction: float = 0.005, eval_max_docs: int = 1000,
         eval_where: Sequence[str] = (), eval_jsonl: Sequence[str] = ()) -> PackResult:
    """Tokenize the run's latest stage and write `RUN/tokens/` and `RUN/eval/` (see docs/pack.md)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CurateError(f"run directory {run} does not exist")
    plan_path = Path(plan) if plan else run / "plan.json"
    if plan and not plan_path.is_file():
        raise CurateError(f"--plan: {plan_path} does not exist")
    try:
        plan_obj = json.loads(plan_path.read_text()) if plan_path.is_file() else None
    except json.JSONDecodeError as e:
        raise CurateError(f"{plan_path} is not valid JSON: {e}") from None
    if plan_obj is not None and "phases" in plan_obj:  # a full plan (not just groups): check it whole
        from mixtures.schema import PlanValidationError, validate_plan

        try:
            validate_plan(plan_obj)
        except PlanValidationError as e:
            raise CurateError(f"{plan_path}: {e}") from None
    groups, case_sql = _groups(plan_obj)
    try:
        tcfg = tokenizer_config or TokenizerConfig()
        if vocab_size is not None:
            tcfg = TokenizerConfig(**{**asdict(tcfg), "vocab_size": vocab_size})
        pcfg = PackConfig(seq_len=seq_len or (plan_obj or {}).get("seq_len", 2048), packing=packing, seed=seed,
                          add_bos=add_bos, eval_fraction=eval_fraction, eval_max_docs=eval_max_docs)
    except ValueError as e:
        raise CurateError(str(e)) from None
    extra = parse_extra(eval_where, "where") + parse_extra(eval_jsonl, "jsonl")
    check_names(extra, [g["name"] for g in groups])
    source_stage, parts = _input_parts(run)
    model = _tokenizer(run, parts, tokenizer, tcfg, vocab_size is not None or tokenizer_config is not None, echo)
    info = tokenizer_info(model)
    if pcfg.add_bos and info.bos_id < 0:
        raise CurateError(f"add_bos: {model} has no BOS piece")

    if executor is None:
        from pipeline.running.adapter import RayExecutor, cluster_cpus, ray_session

        with ray_session(address):
            return _pack(run, plan_obj, groups, case_sql, pcfg, info, parts, source_stage,
                         RayExecutor(workers), cluster_cpus(), echo, extra)
    return _pack(run, plan_obj, groups, case_sql, pcfg, info, parts, source_stage, executor, executor.workers, echo,
                 extra)


def _pack(run, plan_obj, groups, case_sql, pcfg, info, parts, source_stage, executor, cpus, echo,
          eval_specs=()) -> PackResult:
    stage_dir = run / STAGE
    chash = shardio.stable_hash({"tokenizer": info.digest, "groups": case_sql, "version": 1})
    threads = max(1, cpus // max(1, min(len(parts), executor.workers)))
    _check_group_sql(parts[0], case_sql)
    tasks = [TokenizeTask(str(p), str(stage_dir), info.path, case_sql, chash, threads) for p in parts]
    t0 = time.perf_counter()
    markers = executor.map(tokenize_shard, tasks, desc=STAGE, cost=lambda t: Path(t.input).stat().st_size)
    seconds = {"tokenize": round(time.perf_counter() - t0, 3)}
    _remove_stale(stage_dir, {p.stem for p in parts})
    from pipeline.running.stagework import aggregate_stats

    stats = aggregate_stats(STAGE, markers)
    stats["source_stage"] = source_stage
    shardio.atomic_write_json(stage_dir / "stats.json", stats)
    _update_stages_json(run)
    reused = sum(bool(m.get("skipped")) for m in markers)
    echo(f"tokenize: {stats['in']:,} documents, {stats.get('tokens', 0):,} tokens "
         f"({len(parts)} shards, {reused} reused, from stage {source_stage})")

    extra_sets, exclude = write_extra(run, list(eval_specs), [str(t.output) for t in tasks], pcfg.eval_max_docs)
    tokens_dir = run / "tokens"
    # A shard's ids depend only on its input and the tokenize config (both in its marker).
    in_fp = shardio.stable_hash([(m["input_fingerprint"], m["config_hash"]) for m in markers])
    pack_hash = shardio.stable_hash({"pack": asdict(pcfg), "tokenizer": info.digest, "exclude": exclude})
    extra = (("vocab_size", info.vocab_size), ("tokenizer", "tokens/tokenizer.model"))
    outs, ids = tuple(str(t.output) for t in tasks), tuple(str(t.ids) for t in tasks)
    gtasks = [GroupTask(g["name"], str(tokens_dir / g["name"]), outs, ids,
                        info.dtype.name, info.bos_id, info.eos_id, info.pad_id, pcfg,
                        shardio.stable_hash([in_fp, g["name"]]), pack_hash, extra,
                        eval_path=str(run / EVAL_DIR / f"{g['name']}.parquet") if pcfg.eval_fraction else "",
                        exclude=exclude) for g in groups]
    t0 = time.perf_counter()
    metas = executor.map(pack_group, gtasks, desc="pack")
    _remove_stale_groups(tokens_dir, {g["name"] for g in groups})
    seconds["pack"] = round(time.perf_counter() - t0, 3)
    for m in metas:
        if m.get("rebuilt"):
            echo(f"pack: {m['rebuilt']}; rebuilt group {m['group']}")
    per_group = {m["group"]: {k: v for k, v in m.items() if k not in ("skipped", "rebuilt")} for m in metas}
    eval_index = {m["group"]: {"kind": "group", "n_docs": m["n_eval_docs"], "path": f"{EVAL_DIR}/{m['group']}.parquet"}
                  for m in metas if pcfg.eval_fraction} | extra_sets
    write_eval_index(run, eval_index)
    unassigned = {"documents": 0, "tokens": 0}
    for m in markers:
        u = m["groups"].get("", {})
        unassigned["documents"] += u.get("docs", 0)
        unassigned["tokens"] += u.get("tokens", 0)
    index = {
        "groups": per_group,
        "seq_len": pcfg.seq_len,
        "packing": pcfg.packing,
        "seed": pcfg.seed,
        "add_bos": pcfg.add_bos,
        "dtype": info.dtype.name,
        "vocab_size": info.vocab_size,
        "bos_id": info.bos_id,
        "eos_id": info.eos_id,
        "pad_id": info.pad_id,
        "tokenizer": "tokens/tokenizer.model",
        "source_stage": source_stage,
        "unassigned": unassigned,
        "eval": {name: e["n_docs"] for name, e in eval_index.items()},
        "seconds": seconds,
    }
    problems = check_plan(plan_obj, per_group) if plan_obj else []
    index["plan_check"] = {"ok": not problems, "problems": problems}
    shardio.atomic_write_json(tokens_dir / "index.json", index)
    echo(summary(index))
    for p in problems:
        echo(f"plan: {p}")
    return PackResult(index, problems)


def summary(index: dict) -> str:
    head = f"{'group':<16} {'docs':>9} {'tokens':>14} {'rows':>9} {'truncated':>9} {'padding':>8}"
    lines = [f"packed ({index['packing']}, seq_len {index['seq_len']}, {index['dtype']}):", head]
    for name, g in index["groups"].items():
        lines.append(f"{name:<16} {g['n_docs']:>9,} {g['n_tokens']:>14,} {g['n_rows']:>9,} "
                     f"{g['truncated_docs']:>9,} {100 * g['padding_share']:>7.2f}%")
    u = index["unassigned"]
    if u["documents"]:
        lines.append(f"unassigned: {u['documents']:,} documents, {u['tokens']:,} tokens (in no group, not packed)")
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pack", help="tokenize the run (sentencepiece) and pack token rows per mixture group")
    p.add_argument("run_dir")
    p.add_argument("--plan", help="plan.json with the groups (default: RUN_DIR/plan.json; without one, one group `all`)")
    p.add_argument("--tokenizer", help="sentencepiece .model, or a Hugging Face folder with tokenizer.model "
                                       "(default: train one on the run)")
    p.add_argument("--packing", choices=["best-fit", "concat"], default="best-fit",
                   help="best-fit keeps documents whole (default); concat concatenates and chunks")
    p.add_argument("--seq-len", type=int, help="training context length (default: the plan's, else 2048)")
    p.add_argument("--vocab-size", type=int, help="vocabulary of a trained tokenizer (default 32000)")
    p.add_argument("--seed", type=int, default=0, help="packing seed (default 0)")
    p.add_argument("--add-bos", action="store_true", help="put BOS before every document (EOS always follows)")
    p.add_argument("--eval-fraction", type=float, default=0.005,
                   help="share of each group held out as evaluation data, RUN/eval/<group>.parquet (default 0.005)")
    p.add_argument("--eval-max-docs", type=int, default=1000, help="held-out documents per group at most (default 1000)")
    p.add_argument("--eval-where", action="append", default=[], metavar="NAME=SQL",
                   help="an evaluation set of the documents a catalog predicate selects, held out of training")
    p.add_argument("--eval-jsonl", action="append", default=[], metavar="NAME=FILE",
                   help="an evaluation set from a JSONL file of {\"text\": ...} lines")
    p.add_argument("--workers", type=int, help="parallel workers (default: the Ray cluster's CPUs)")
    p.add_argument("--address", help="Ray address to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    result = pack(a.run_dir, a.plan, a.tokenizer, a.packing, a.seq_len, a.vocab_size, a.seed, a.add_bos,
                  a.workers, a.address, eval_fraction=a.eval_fraction, eval_max_docs=a.eval_max_docs,
                  eval_where=a.eval_where, eval_jsonl=a.eval_jsonl)
    return 1 if result.plan_problems else 0
