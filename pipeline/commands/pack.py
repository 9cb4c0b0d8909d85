"""`curate pack RUN_DIR`: run the tokenize stage if needed, then pack the tokens per mixture group.

Steps, each resumable through markers:
  1. the `tokenize` stage (stages/tokens/stage.py) after the run's latest stage, through the
     one runner (pipeline/running/runner.py): the tokenizer (`--tokenizer`, else the run's
     `tokens/tokenizer/` or `tokens/tokenizer.model`, else one trained on a sample of the run), then per shard the
     group (the plan's first-match CASE, DuckDB) and exact `n_tokens`; `stages.json` gains
     "tokenize" so the catalog's `docs` view has `n_tokens` and `group`. Shards already
     tokenized from the same input with the same tokenizer and groups are reused.
  2. the `pack` stage (stages/tokens/pack_stage.py), through the same runner on the tokenize shards:
     per group, a task: Megatron `.bin/.idx`, packed rows, segments, meta.json, held-out eval.
  3. `tokens/index.json` and the plan re-checked with exact token counts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from curate.pipeline.errors import CurateError
from curate.pipeline.catalog.eval_sets import EVAL_DIR, check_names, parse_extra, write_extra
from curate.pipeline.catalog.eval_sets import write_index as write_eval_index
from curate.pipeline.running import logs
from curate.pipeline.running.config import StageSpec
from curate.pipeline.running.executors import EXECUTORS, open_executor
from curate.pipeline.running.lock import holds_run_lock
from curate.stages import ledger, shardio
from curate.pipeline.running.stagework import document_bytes
from curate.stages.base import Executor, LocalExecutor
from curate.stages.tokens.pack_stage import REBUILT, STAGE as PACK, TOKENS, PackStageConfig, TokenizerFacts
from curate.stages.tokens.packing import PackConfig
from curate.stages.tokens.tokenizers import STAGE, TokenizerConfig, tokenizer_info
from curate.stages.tokens.stage import TokenizeConfig, check_group_sql, plan_groups, read_plan, resolve_tokenizer


log = logs.log.getChild("pack")

@dataclass
class PackResult:
    """What `pack` did: per-group figures as in tokens/index.json, and plan problems if any."""

    index: dict
    plan_problems: list[str] = field(default_factory=list)


def _input_parts(run: Path) -> tuple[str, list[Path]]:
    """The latest stage before tokenize that has shards, and its shards."""
    from curate.pipeline.catalog.db import read_stage_names

    for name in reversed([n for n in read_stage_names(run) if n != STAGE]):
        parts = sorted((run / name).glob("*.parquet"))
        if parts:
            return name, parts
    raise CurateError(f"{run} has no stage with shards to tokenize; run `curate run CONFIG` first")


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
         seed: int = 0, add_bos: bool | None = None, workers: int | None = None, address: str | None = None,
         tokenizer_config: TokenizerConfig | None = None, executor: Executor | str = "ray",
         echo: Callable[[str], None] = print, eval_fraction: float = 0.005, eval_max_docs: int = 1000,
         eval_where: Sequence[str] = (), eval_jsonl: Sequence[str] = ()) -> PackResult:
    """Tokenize the run's latest stage and write `RUN/tokens/` and `RUN/eval/` (see docs/pack.md).
    `executor`: an open `Executor`, or `ray` / `local` / `auto` to open one as `curate run` does
    (`auto` chooses by the documents' bytes)."""
    run = Path(run_dir)
    if not run.is_dir():
        raise CurateError(f"run directory {run} does not exist")
    plan_path, plan_obj = read_plan(run, plan)
    groups, case_sql = plan_groups(plan_obj)
    try:
        train = tokenizer_config
        if vocab_size is not None:
            train = TokenizerConfig(**{**asdict(train or TokenizerConfig()), "vocab_size": vocab_size})
        pcfg = PackConfig(seq_len=seq_len or (plan_obj or {}).get("seq_len", 2048), packing=packing, seed=seed,
                          add_bos=bool(add_bos), eval_fraction=eval_fraction, eval_max_docs=eval_max_docs)
    except ValueError as e:
        raise CurateError(str(e)) from None
    extra = parse_extra(eval_where, "where") + parse_extra(eval_jsonl, "jsonl")
    check_names(extra, [g["name"] for g in groups])
    source_stage, parts = _input_parts(run)
    # The stage as `curate pack` runs it: plan and tokenizer as given here, a tokenizer retrained
    # only when training options were given (`train`).
    tcfg = TokenizeConfig(tokenizer=tokenizer, plan=str(plan_path) if plan_obj is not None else None, train=train)
    info = tokenizer_info(resolve_tokenizer(run, parts, tcfg, echo))
    check_group_sql(parts[0], case_sql)
    # BOS as the tokenizer itself puts it (Llama-3 adds it, Qwen and curate's own do not) unless asked.
    pcfg = replace(pcfg, add_bos=info.add_bos if add_bos is None else add_bos)
    if pcfg.add_bos and info.bos_id < 0:
        raise CurateError(f"add_bos: {info.path} has no BOS piece")
    _check_base_config(tokenizer, info, pcfg.add_bos)

    args = (run, plan_obj, groups, tcfg, pcfg, info, source_stage, parts, echo, extra)
    if not isinstance(executor, str):  # its owner opened it
        return _pack(*args, executor, executor.workers)
    size = sum(document_bytes(str(p)) for p in parts)
    with open_executor(executor, address, workers, size, say=log.info) as ex:
        return _pack(*args, ex, ex.workers if isinstance(ex, LocalExecutor) else _cluster_cpus())


def _cluster_cpus() -> int:
    from curate.pipeline.running.adapter import cluster_cpus

    return cluster_cpus()


def _check_base_config(tokenizer: str | None, info, add_bos: bool) -> None:
    """A tokenizer given as a model folder (config.json beside it) must fit that model, checked
    before any document is tokenized."""
    from curate.stages.tokens.hf_tokenizer import check_model_config

    config = Path(tokenizer) / "config.json" if tokenizer and Path(tokenizer).is_dir() else None
    if config is None or not config.is_file():
        return
    try:
        check_model_config(config, info.vocab_size, info.bos_id, info.eos_id, add_bos, tokenizer)
    except ValueError as e:
        raise CurateError(f"--tokenizer: {e}") from None


def _pack(run, plan_obj, groups, tcfg, pcfg, info, source_stage, parts, echo, eval_specs, executor,
          cpus) -> PackResult:
    from curate.pipeline.running.runner import run_stages_after

    # sentencepiece threads per worker: the CPUs shared out among the shards that run at once.
    threads = max(1, cpus // max(1, min(len(parts), executor.workers)))
    spec = StageSpec(STAGE, STAGE, replace(tcfg, threads=threads))
    (report,) = run_stages_after(run, source_stage, [spec], executor, echo)
    stats = report.stats.totals
    seconds = {"tokenize": round(report.seconds, 3)}
    echo(f"tokenize: {stats['in']:,} documents, {stats.get('tokens', 0):,} tokens "
         f"({report.shards} shards, {report.skipped} reused, from stage {source_stage})")
    stage_dir = run / STAGE
    markers = [ledger.read_marker(stage_dir, p.stem) for p in parts]
    outs = [str(stage_dir / f"{p.stem}.parquet") for p in parts]
    extra_sets, exclude = write_extra(run, list(eval_specs), outs, pcfg.eval_max_docs)
    names = [g["name"] for g in groups]
    tokens_dir = run / TOKENS
    facts = TokenizerFacts(Path(info.path).relative_to(run).as_posix(), info.digest, info.dtype.name, info.vocab_size,
                           info.bos_id, info.eos_id, info.pad_id)
    pack_spec = StageSpec(PACK, PACK, PackStageConfig(pcfg, tuple(names), facts, tuple(exclude), EVAL_DIR))
    (packed,) = run_stages_after(run, STAGE, [pack_spec], executor, echo)
    seconds["pack"] = round(packed.seconds, 3)
    metas = [json.loads((tokens_dir / g / "meta.json").read_text()) for g in names]
    for g, why in json.loads((run / PACK / ledger.WORK / REBUILT).read_text()).items():
        echo(f"pack: {why}; rebuilt group {g}")
    per_group = {m["group"]: m for m in metas}
    eval_index = {m["group"]: {"kind": "group", "n_docs": m["n_eval_docs"], "path": f"{EVAL_DIR}/{m['group']}.parquet"}
                  for m in metas if pcfg.eval_fraction} | extra_sets
    write_eval_index(run, eval_index)
    unassigned = {"documents": 0, "tokens": 0}
    for m in markers:
        u = m.extra["groups"].get("", {})
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
        "tokenizer": facts.path,
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
    p = sub.add_parser("pack", help="tokenize the run and pack token rows per mixture group")
    p.add_argument("run_dir")
    p.add_argument("--plan", help="plan.json with the groups (default: RUN_DIR/plan.json; without one, one group `all`)")
    p.add_argument("--tokenizer", help="a Hugging Face model folder (tokenizer.json or tokenizer.model), a "
                                       "tokenizer.json, or a sentencepiece .model (default: the run's, else train "
                                       "one on the run)")
    p.add_argument("--packing", choices=["best-fit", "concat"], default="best-fit",
                   help="best-fit keeps documents whole (default); concat concatenates and chunks")
    p.add_argument("--seq-len", type=int, help="training context length (default: the plan's, else 2048)")
    p.add_argument("--vocab-size", type=int, help="vocabulary of a trained tokenizer (default 32000)")
    p.add_argument("--seed", type=int, default=0, help="packing seed (default 0)")
    p.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=None,
                   help="put BOS before every document (EOS always follows); default: as the tokenizer "
                        "does (Llama-3 yes, Qwen and curate's own sentencepiece no)")
    p.add_argument("--eval-fraction", type=float, default=0.005,
                   help="share of each group held out as evaluation data, RUN/eval/<group>.parquet (default 0.005)")
    p.add_argument("--eval-max-docs", type=int, default=1000, help="held-out documents per group at most (default 1000)")
    p.add_argument("--eval-where", action="append", default=[], metavar="NAME=SQL",
                   help="an evaluation set of the documents a catalog predicate selects, held out of training")
    p.add_argument("--eval-jsonl", action="append", default=[], metavar="NAME=FILE",
                   help="an evaluation set from a JSONL file of {\"text\": ...} lines")
    p.add_argument("--workers", type=int, help="parallel workers (default: the Ray cluster's CPUs)")
    p.add_argument("--address", help="Ray address to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--executor", choices=list(EXECUTORS), default="auto",
                   help="where tokenize and packing run, as for `curate run`: auto (default: Ray when the run is big "
                        "enough to pay for starting it, or an address is given), ray, or local (this process)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    result = pack(a.run_dir, a.plan, a.tokenizer, a.packing, a.seq_len, a.vocab_size, a.seed, a.add_bos,
                  a.workers, a.address, executor=a.executor, eval_fraction=a.eval_fraction, eval_max_docs=a.eval_max_docs,
                  eval_where=a.eval_where, eval_jsonl=a.eval_jsonl)
    return 1 if result.plan_problems else 0
