"""The packing stage: per mixture group, a task that writes the group's token files (stages/tokens/packing.py).

`curate pack` runs it through the one runner right after tokenize. Its tasks are the plan's
groups, not shards, so it declares a global step: `run(inputs, ctx)` sees every tokenize shard
and schedules one `pack_group` per group on `ctx.executor`. Each group resumes through its own
marker (`tokens/_done/<group>.json`, stages/ledger.py); its files land in `RUN/tokens/<group>/`.

The runner's own bookkeeping is per input shard: a marker in the stage's folder (`RUN/pack/_done/
<shard>.json`, no outputs) says the shard's documents went into the groups under this config;
`RUN/pack/_work/rebuilt.json` names the groups the last run rebuilt because their files were damaged.

It cannot be listed under a config's `stages:`: the plan's groups, the tokenizer and the
evaluation sets held out of every group are resolved by `curate pack` before it runs
(docs/pack.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from curate.records.marker import Marker
from curate.stages import ledger, shardio
from curate.stages.base import GLOBAL, SIDE_FILES, Declares, GlobalContext
from curate.stages.tokens.packing import GroupTask, PackConfig, pack_group

STAGE = "pack"
TOKENS = "tokens"  # RUN/tokens: every group's folder, its marker and index.json
REBUILT = "rebuilt.json"  # in the stage's work folder: {group: why} of the groups the last run rebuilt


@dataclass(frozen=True)
class TokenizerFacts:
    """What the packed files record of the tokenizer (tokens/index.json, each group's meta.json)."""

    path: str  # relative to the run
    digest: str
    dtype: str
    vocab_size: int
    bos_id: int
    eos_id: int
    pad_id: int


@dataclass
class PackStageConfig:
    """The packing stage as `curate pack` resolved it."""

    pack: PackConfig = field(default_factory=PackConfig)
    groups: tuple[str, ...] = ()
    """The plan's group names, in plan order."""
    tokenizer: TokenizerFacts | None = None
    exclude: tuple[str, ...] = ()
    """Ids held out of every group for evaluation sets defined over the catalog (`--eval-where`, `--eval-jsonl`)."""
    eval_dir: str = "eval"
    """Where a group's held-out documents go, `RUN/<eval_dir>/<group>.parquet` (with `pack.eval_fraction` > 0)."""

    def __post_init__(self) -> None:
        if self.tokenizer is None or not self.groups:
            raise ValueError("the pack stage is run by `curate pack RUN_DIR`, which resolves its plan, tokenizer and "
                             "evaluation sets; list the stages up to tokenize under `stages:`")


class PackStage:
    """One task per mixture group over every tokenize shard."""

    declares = Declares(step=GLOBAL, writes=frozenset({SIDE_FILES}))

    def __init__(self, config: PackStageConfig, name: str = STAGE):
        self.config = config
        self.name = name

    def group_tasks(self, run: Path, inputs: list[Path]) -> list[GroupTask]:
        """A `GroupTask` per group over the tokenize shards `inputs` (and their token ids)."""
        from curate.stages.tokens.tokenizers import ids_path

        cfg, tok = self.config, self.config.tokenizer
        outs = tuple(str(p) for p in inputs)
        ids = tuple(str(ids_path(p.parent, p.stem)) for p in inputs)
        tokens = run / TOKENS
        # A shard's ids depend only on its input and the tokenize config (both in its marker).
        in_fp = shardio.stable_hash([(m.input_fingerprint, m.config_hash) for m in _tokenize_markers(inputs)])
        pack_hash = shardio.stable_hash({"pack": asdict(cfg.pack), "tokenizer": tok.digest,
                                         "exclude": list(cfg.exclude)})
        meta = (("vocab_size", tok.vocab_size), ("tokenizer", tok.path))
        return [GroupTask(g, str(tokens / g), outs, ids, tok.dtype, tok.bos_id, tok.eos_id, tok.pad_id, cfg.pack,
                          shardio.stable_hash([in_fp, g]), pack_hash, meta,
                          eval_path=str(run / cfg.eval_dir / f"{g}.parquet") if cfg.pack.eval_fraction else "",
                          exclude=cfg.exclude)
                for g in cfg.groups]

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        inputs = [Path(p) for p in inputs]
        run = Path(ctx.stage_dir).parent
        metas = ctx.executor.map(pack_group, self.group_tasks(run, inputs), desc=self.name)
        # Which groups this run rebuilt because their files no longer matched their markers, and
        # why: `curate pack` says so (the markers themselves equal a clean pack's).
        rebuilt = {m["group"]: m["rebuilt"] for m in metas if m.get("rebuilt")}
        shardio.atomic_write_json(Path(ctx.work_dir) / REBUILT, rebuilt)
        remove_stale_groups(run / TOKENS, set(self.config.groups))
        for p, m in zip(inputs, _tokenize_markers(inputs)):
            fp = shardio.stable_hash([m.input_fingerprint, m.config_hash])
            if ledger.current(ctx.stage_dir, p.stem, fp, ctx.config_hash) is None:
                ledger.write_marker(ctx.stage_dir, p.stem, Marker.new(
                    fp, ctx.config_hash, [], {"in": m.counts.kept, "kept": m.counts.kept}, stage=self.name))


def _tokenize_markers(inputs: list[Path]) -> list[Marker]:
    markers = [ledger.read_marker(p.parent, p.stem) for p in inputs]
    missing = [p for p, m in zip(inputs, markers) if m is None]
    if missing:
        raise ValueError(f"{missing[0]} has no tokenize marker; the pack stage reads tokenize shards")
    return markers


def remove_stale_groups(tokens_dir: Path, keep: set[str]) -> None:
    """Token folders of groups an earlier plan had: the trainer must not mistake them for current ones."""
    import shutil

    for d in tokens_dir.iterdir():
        if d.is_dir() and not d.name.startswith("_") and d.name not in keep and (d / "meta.json").exists():
            shutil.rmtree(d)
            ledger.marker_path(tokens_dir, d.name).unlink(missing_ok=True)
