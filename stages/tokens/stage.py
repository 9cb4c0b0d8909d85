"""The `tokenize` stage kind: exact `n_tokens` and the mixture `group` of every document, and
each shard's token ids, for `curate pack` to write per group (docs/pack.md).

A run config may list it (last, usually); `curate pack` runs it through the same runner when the
run's tokens are missing or stale. Before any shard, the driver resolves what every shard needs
(the stage's `prepare` hook): the tokenizer (given, the run's own, or trained on the run with
`ensure_tokenizer`) and the SQL that names each document's group. The workers then run
`TokenizeStage.write_shard` per shard: `stages/tokens/tokenizers.py`'s `encode_shard` writes the delta
shard, the ids file `_ids/<part>.bin` and the marker. The plan's groups are read here too, for
`curate pack` (`read_plan`, `plan_groups`, `check_group_sql`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from curate.records.errors import CurateError
from curate.records.marker import Marker
from curate.stages import ledger, shardio
from curate.stages.base import COLUMNS, SHARDS, SIDE_FILES, Declares, Prepared, StageOutput, add_columns
from curate.stages.tokens.hf_tokenizer import read_special_tokens
from curate.stages.tokens.tokenizers import (HF_FILE, HF_TOKENIZER_FILES, SP_FILE, STAGE, TokenizerConfig, TokenizeTask,
                                    assign_groups, encode_shard, is_hf, load_tokenizer, resolve_model_path,
                                    sample_texts, tokenizer_digest, tokenizer_info, train_tokenizer)

TOKENIZER_TASK = "_tokenizer"  # marker tokens/_done/_tokenizer.json; group names never start with "_"
HF_DIR = "tokenizer"  # RUN/tokens/tokenizer/: a Hugging Face tokenizer's files


@dataclass
class TokenizeConfig:
    """A `tokenize` stage in a run config, e.g. `{kind: tokenize, train: {vocab_size: 8000}}`."""

    tokenizer: str | None = None
    """A sentencepiece .model, a tokenizer.json, or a Hugging Face folder holding either (tokenizer.json
    wins, as in transformers); default: the run's tokenizer (tokens/tokenizer/ or tokens/tokenizer.model),
    a sentencepiece model trained on the run when it has none."""
    plan: str | None = None
    """plan.json whose groups (first match wins) give each document its `group`; default: the
    run's plan.json when present, else one group `all`."""
    train: TokenizerConfig | None = None
    """How a tokenizer is trained on the run (vocab_size, model_type, ...). Given, the run's
    tokenizer is retrained when it was trained otherwise; absent, it is reused (or trained with
    the defaults when there is none)."""
    threads: int = 1
    """sentencepiece threads per worker (a tokenizer.json uses the tokenizers thread pool); does not
    change the output."""

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


@dataclass(frozen=True)
class TokenizeWork:
    """What the workers run with, resolved once in the driver: the model and the group SQL."""

    model: str
    group_sql: str  # SQL expression giving each document's group name (NULL: in no group)
    threads: int = 1


class TokenizeStage:
    """Writes each shard itself (the delta shard and its token ids), after a driver-side step."""

    declares = Declares(step=SHARDS, writes=frozenset({COLUMNS, SIDE_FILES}), prepares=True)

    def __init__(self, config: TokenizeConfig | TokenizeWork, name: str = STAGE):
        self.config = config
        self.name = name

    def prepare(self, run_dir: Path, inputs: list[Path], say: Callable[[str], None]) -> Prepared:
        """The tokenizer and group SQL every shard needs, resolved once; the markers' hash covers
        the tokenizer's bytes and the groups only (`config_hash`)."""
        cfg: TokenizeConfig = self.config
        if not inputs:
            raise CurateError(f"stage {self.name}: there are no documents to tokenize (the stage before it has no shards)")
        _, plan = read_plan(run_dir, cfg.plan)
        _, case_sql = plan_groups(plan)
        model = resolve_tokenizer(run_dir, inputs, cfg, say)
        check_group_sql(inputs[0], case_sql)
        return Prepared(TokenizeWork(str(model), case_sql, cfg.threads), config_hash(tokenizer_info(model).digest, case_sql))

    def _work(self) -> TokenizeWork:
        if not isinstance(self.config, TokenizeWork):
            raise RuntimeError(f"stage {self.name}: tokenize runs on a prepared config (model and groups resolved)")
        return self.config

    def setup(self) -> None:
        load_tokenizer(self._work().model)  # once per worker; cached for its shards

    def process(self, table: pa.Table) -> StageOutput:
        """One batch in memory: `n_tokens` and `group` added (no ids file; `write_shard` writes one)."""
        work = self._work()
        sp = load_tokenizer(work.model)
        counts = [len(ids) for ids in sp.encode(table.column("text").to_pylist(), num_threads=work.threads)]
        groups = assign_groups(table, work.group_sql)
        return StageOutput(add_columns(table, self.name, {"n_tokens": pa.array(counts, pa.int64()), "group": groups}))

    def write_shard(self, job) -> dict:
        """Tokenize the runner's shard job (input, stage_dir, fingerprint, config_hash); its marker."""
        work = self._work()
        task = TokenizeTask(job.input, job.stage_dir, work.model, work.group_sql, job.config_hash, work.threads,
                            stage=self.name)
        return encode_shard(task, job.fingerprint)


def config_hash(model_digest: str, group_sql: str) -> str:
    """What a tokenize marker must match besides its input: the tokenizer's bytes and the groups
    (not the stage's name or threads, so `curate run` and `curate pack` share shards)."""
    return shardio.stable_hash({"tokenizer": model_digest, "groups": group_sql, "version": 1})


def run_tokenizer_path(run: Path) -> Path | None:
    """The run's tokenizer: RUN/tokens/tokenizer/ (a Hugging Face tokenizer's files) or
    RUN/tokens/tokenizer.model (sentencepiece); None before the run has one."""
    hf = run / "tokens" / HF_DIR
    if (hf / HF_FILE).is_file():
        return hf
    sp = run / "tokens" / SP_FILE
    return sp if sp.is_file() else None


def _install_given(tokens_dir: Path, given: str) -> Path:
    """Copy the given tokenizer into the run, byte for byte: a .model to tokens/tokenizer.model, a
    Hugging Face folder's tokenizer files to tokens/tokenizer/; the other kind is removed, so the
    run has one tokenizer."""
    src = resolve_model_path(given)
    tokenizer_info(src)  # fail early on a file that is not a usable tokenizer
    hf_out, sp_out = tokens_dir / HF_DIR, tokens_dir / SP_FILE
    if is_hf(src):
        names = [n for n in HF_TOKENIZER_FILES if (src / n).is_file()]
        if (src / "config.json").is_file() and "eos_token" not in read_special_tokens(src)[0]:
            names.append("config.json")  # the EOS id comes from the model's config (a bare tokenizer.json)
        if not hf_out.is_dir() or tokenizer_digest(hf_out) != tokenizer_digest(src):
            shutil.rmtree(hf_out, ignore_errors=True)
            for n in names:
                shardio.atomic_write_bytes(hf_out / n, (src / n).read_bytes())
        sp_out.unlink(missing_ok=True)
        out = hf_out
    else:
        if not sp_out.exists() or shardio.file_digest(sp_out) != shardio.file_digest(src):
            shardio.atomic_write_bytes(sp_out, src.read_bytes())
        shutil.rmtree(hf_out, ignore_errors=True)
        out = sp_out
    ledger.write_marker(tokens_dir, TOKENIZER_TASK,
                        Marker.new(tokenizer_digest(out), "given", stage="tokenizer", source=str(src)))
    return out


def ensure_tokenizer(run: Path, parts: list[Path], given: str | None, train: TokenizerConfig | None,
                     say: Callable[[str], None]) -> Path:
    """The run's tokenizer: a copy of `given` (RUN/tokens/tokenizer.model, or RUN/tokens/tokenizer/
    for a Hugging Face folder), else the run's earlier one (unless `train` asks for other settings
    than it was trained with: a tokenizer change re-encodes everything, so it never happens
    implicitly), else a new sentencepiece model trained on an even sample of `parts`."""
    tokens_dir = run / "tokens"
    out = tokens_dir / SP_FILE
    if given:
        return _install_given(tokens_dir, given)
    earlier = run_tokenizer_path(run)
    if train is None and earlier is not None and is_hf(earlier):
        return earlier
    cfg = train or TokenizerConfig()
    train_hash = shardio.stable_hash(asdict(cfg))
    marker = ledger.read_marker(tokens_dir, TOKENIZER_TASK)
    if out.exists() and marker is not None and (train is None or marker.config_hash == train_hash):
        return out
    say(f"training a {cfg.model_type} tokenizer (vocab {cfg.vocab_size}) on up to {cfg.train_chars:,} characters")
    train_tokenizer(sample_texts(parts, cfg.train_chars), cfg, out)
    shutil.rmtree(tokens_dir / HF_DIR, ignore_errors=True)  # the run's tokenizer is now the trained one
    ledger.write_marker(tokens_dir, TOKENIZER_TASK, Marker.new(None, train_hash, stage="tokenizer", source="trained",
                                                              config=asdict(cfg)))
    return out


ALL_GROUP = "all"


def read_plan(run: Path, plan: str | Path | None) -> tuple[Path, dict | None]:
    """The plan a tokenize or pack step follows: `plan` (which must exist), else the run's
    plan.json when present, else none (None). A full plan (with phases) is validated whole."""
    path = Path(plan) if plan else run / "plan.json"
    if plan and not path.is_file():
        raise CurateError(f"--plan: {path} does not exist")
    if not path.is_file():
        return path, None
    try:
        obj = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CurateError(f"{path} is not valid JSON: {e}") from None
    if "phases" in obj:
        from curate.mixtures.schema import PlanValidationError, validate_plan

        try:
            validate_plan(obj)
        except PlanValidationError as e:
            raise CurateError(f"{path}: {e}") from None
    return path, obj


def plan_groups(plan: dict | None) -> tuple[list[dict], str]:
    """The plan's groups (first-match order) and the SQL giving each document its group; without
    a plan, one group `all` of every document."""
    if plan is None:
        return [{"name": ALL_GROUP, "where": "TRUE"}], f"'{ALL_GROUP}'"
    from curate.mixtures.groups import GroupError, group_case_sql, parse_groups

    try:
        groups = parse_groups([{"name": g.get("name"), "where": g.get("where")} for g in plan.get("groups", [])],
                              "plan.json groups")
    except GroupError as e:
        raise CurateError(str(e)) from None
    return list(plan["groups"]), group_case_sql(groups)


def check_group_sql(part: Path, case_sql: str) -> None:
    """Fail before any work when a group predicate does not run on the shards' columns: the
    query every shard runs, on an empty table of the shard's schema."""
    empty = pq.read_schema(part).empty_table()
    empty = empty.drop_columns([c for c in ("n_tokens", "group") if c in empty.column_names])  # as encode_shard
    try:
        assign_groups(empty, case_sql)
    except ValueError as e:
        raise CurateError(f"plan.json groups: a `where` predicate does not run on {part.parent.name} shards: {e}") from None


def resolve_tokenizer(run: Path, parts: list[Path], cfg: TokenizeConfig, say: Callable[[str], None]) -> Path:
    """The run's tokenizer (tokens/tokenizer/ or tokens/tokenizer.model) as `cfg` asks (`ensure_tokenizer`)."""
    try:
        return ensure_tokenizer(run, parts, cfg.tokenizer, cfg.train, say)
    except (OSError, ValueError) as e:
        raise CurateError(f"--tokenizer: {e}" if cfg.tokenizer else str(e)) from None
