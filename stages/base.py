"""The contracts every stage follows.

A stage *declares* how it runs and what it writes (`Declares`, its class attribute `declares`),
and the runner (pipeline/running/runner.py) schedules it by that declaration alone:

- `step`: `batches` (the default, a *map stage*: `process(table)` turns one `pyarrow.Table` of
  documents into the documents it keeps and those it rejects with a reason, in long-lived
  workers that call `setup()` once), `shards` (`write_shard(job)` writes one shard's files and
  marker itself, as a plain task), `global` (`run(inputs, ctx)` sees every shard at once and
  schedules its own passes on an `Executor`: deduplication, sampling) or `inputs` (its tasks come
  from the run's inputs, not from shards: ingest, the first stage).
- `writes`: a delta of columns, dropped rows, full shards (text included, a base for later
  stages), side files (tokenize's token ids, ingest's quarantine).
- `prepares`: a `prepare(run_dir, inputs, say)` hook the driver runs over the whole run before
  any task (a tokenizer trained on the run, quantile thresholds); it returns the config the
  workers run with (`Prepared`).

Stages never import ray: `pipeline/running/adapter.py` decides where they run. A stage's
`resources()` (`ResourceHinted`) asks its workers' CPUs, GPUs or memory of the executor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol, Sequence, TypedDict, TypeVar, runtime_checkable

import pyarrow as pa

# Required document columns (README's document columns; docs/internals.md).
DOC_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("url", pa.string()),
        pa.field("date", pa.timestamp("us", tz="UTC")),
        pa.field("n_chars", pa.int64(), nullable=False),
    ]
)

# What ingest writes: the required columns, then what the input held beyond them and where each
# document came from. Later stages carry these columns like any other.
INGEST_SCHEMA = pa.schema(
    list(DOC_SCHEMA)
    + [
        pa.field("meta", pa.string()),  # JSON object of the input fields no column above took
        pa.field("input_path", pa.string(), nullable=False),  # the input file (or URL) as listed
        pa.field("input_line", pa.int64()),  # its 1-based line (JSONL) or row (Parquet); null: text file
    ]
)

# One row per document a stage dropped. `keeper_id` is set for duplicates only.
REJECTED_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("keeper_id", pa.string()),
        pa.field("source", pa.string()),
        pa.field("n_chars", pa.int64()),
    ]
)

# One row per input record that could not be read as a document.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("line", pa.int64()),  # 1-based line (JSONL, text) or row (Parquet); null if unknown
        pa.field("offset", pa.int64()),  # byte offset in the (decompressed) stream, when known
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),  # the parser's message, or the first bytes of the record
    ]
)


def empty_rejected() -> pa.Table:
    return REJECTED_SCHEMA.empty_table()


def rejected_rows(
    docs: pa.Table, stage: str, reasons: Sequence[str], keeper_ids: Sequence[str | None] | None = None
) -> pa.Table:
    """Rejected-table rows for `docs` (same length as `reasons`)."""
    n = docs.num_rows
    if len(reasons) != n:
        raise ValueError(f"{n} documents but {len(reasons)} reasons")
    return pa.table(
        {
            "id": docs.column("id"),
            "stage": pa.array([stage] * n, pa.string()),
            "reason": pa.array(list(reasons), pa.string()),
            "keeper_id": pa.array(list(keeper_ids) if keeper_ids is not None else [None] * n, pa.string()),
            "source": docs.column("source") if "source" in docs.column_names else pa.nulls(n, pa.string()),
            "n_chars": docs.column("n_chars") if "n_chars" in docs.column_names else pa.nulls(n, pa.int64()),
        },
        schema=REJECTED_SCHEMA,
    )


@dataclass
class StageOutput:
    """What a map stage returns for one batch.

    Conservation: `kept.num_rows + rejected.num_rows == input rows` (the runner checks it).
    `counters` are extra named counts (e.g. `invalid_utf8_replaced`) summed into stats.
    """

    kept: pa.Table
    rejected: pa.Table = field(default_factory=empty_rejected)
    counters: dict[str, int] = field(default_factory=dict)


def add_columns(table: pa.Table, stage: str, columns: dict[str, pa.Array]) -> pa.Table:
    """`table` with `columns` appended; a column that already exists is an error naming `stage`
    (stages never rewrite another stage's columns)."""
    for col, values in columns.items():
        if col in table.column_names:
            raise ValueError(f"stage {stage}: column `{col}` already exists; an earlier stage wrote it "
                             f"(stages never rewrite another stage's columns)")
        table = table.append_column(col, values)
    return table


def split_by_reason(table: pa.Table, stage: str, reasons: Sequence[str | None],
                    counters: dict[str, int] | None = None) -> StageOutput:
    """Keep the rows whose reason is None; reject the others with their reason."""
    drop = [i for i, r in enumerate(reasons) if r is not None]
    if not drop:
        return StageOutput(kept=table, counters=counters or {})
    keep = [i for i, r in enumerate(reasons) if r is None]
    rejected = rejected_rows(table.take(pa.array(drop, pa.int64())), stage, [reasons[i] for i in drop])
    return StageOutput(kept=table.take(pa.array(keep, pa.int64())), rejected=rejected, counters=counters or {})


# What a stage writes (`Declares.writes`).
COLUMNS = "columns"  # a delta shard: its new columns over the input's base (stages/docshard.py)
DROPPED_ROWS = "dropped_rows"  # rejected/<stage>/<shard>.parquet, one row per dropped document
FULL_SHARDS = "full_shards"  # whole shards, text included: later stages read their text from them
SIDE_FILES = "side_files"  # files beside its shards (tokenize: _ids/<shard>.bin; ingest: quarantine/)
WRITES = (COLUMNS, DROPPED_ROWS, FULL_SHARDS, SIDE_FILES)

# How the runner schedules a stage (`Declares.step`).
INPUTS = "inputs"  # tasks over the run's inputs (ingest): `tasks`, `task_id`, `fingerprint`, `job`, `run_job`, `size`
BATCHES = "batches"  # per shard, `process(table)` on batches in workers that ran `setup()` once
SHARDS = "shards"  # per shard, `write_shard(job)` as a plain task: the stage writes the shard and its marker
GLOBAL = "global"  # `run(inputs, ctx)` over every shard at once: the stage schedules its own passes
STEPS = (INPUTS, BATCHES, SHARDS, GLOBAL)


@dataclass(frozen=True)
class Declares:
    """What a stage tells the runner about itself; the runner asks nothing else of its class."""

    step: str = BATCHES
    writes: frozenset[str] = frozenset({COLUMNS, DROPPED_ROWS})
    prepares: bool = False
    """Whether `prepare(run_dir, inputs, say) -> Prepared` runs in the driver before any task."""
    side: str = "rejected"
    """The run folder its set-aside rows go under (`quarantine` for ingest)."""

    def __post_init__(self) -> None:
        if self.step not in STEPS:
            raise ValueError(f"declares.step: {self.step!r} is not one of {', '.join(STEPS)}")
        unknown = set(self.writes) - set(WRITES)
        if unknown or not self.writes:
            raise ValueError(f"declares.writes: give some of {', '.join(WRITES)}; got {sorted(self.writes)}")


MAP = Declares()  # a map stage: the default of every stage that declares nothing


def declared(stage: Any) -> Declares:
    """A stage's declaration (`MAP` for one that declares nothing, e.g. a user's map stage)."""
    return getattr(stage, "declares", MAP)


@dataclass(frozen=True)
class Prepared:
    """What a stage's `prepare` hook returns: the config its workers run with (tokenize: the model
    and group SQL resolved), and the config hash its markers must match (None: the runner's own,
    over kind, name and this config)."""

    config: Any
    config_hash: str | None = None


@runtime_checkable
class MapStage(Protocol):
    """A per-document stage. `name` is the stage's name in the run directory."""

    name: str

    def setup(self) -> None:
        """Load models or other heavy state; called once per worker before any batch."""

    def process(self, table: pa.Table) -> StageOutput:
        """Annotate and/or filter one batch. Must not rewrite columns another stage owns."""


T = TypeVar("T")
R = TypeVar("R")

# A task should read at least this many bytes: below it, dispatch, markers and Parquet footers
# cost more than the work (557 shards of ~26 documents made MinHash dedup 3x slower than a run
# of normal shards over more data). Each item keeps its own output and marker; only the
# dispatch is shared.
TASK_BYTES = 16 << 20


class Resources(TypedDict, total=False):
    """What one worker of a stage needs, in Ray's option names; an absent key is the default
    (one CPU, no GPU, no memory reservation). An executor grants a GPU only where there is one."""

    num_cpus: float
    num_gpus: float
    memory: int  # bytes


@runtime_checkable
class ResourceHinted(Protocol):
    """A stage whose workers need more (or other) than one CPU, e.g. a GPU scorer."""

    def resources(self) -> Resources:
        ...


def resources_of(stage: Any) -> Resources:
    return stage.resources() if isinstance(stage, ResourceHinted) else Resources()


class Executor(Protocol):
    """Runs work over items in parallel, results in input order: the seam between the stages and
    where they run (`LocalExecutor` here, in this process; `RayExecutor` in pipeline/running/adapter.py).

    `fn`, `make` and the items must be picklable (module-level functions, dataclasses).
    `cost(item)` lets an executor start the costliest items first; `size(item)` (bytes the item
    reads) lets it group small items into tasks of about `TASK_BYTES`.
    """

    workers: int

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "",
            cost: Callable[[T], float] | None = None, size: Callable[[T], int] | None = None) -> list[R]:
        """`fn(item)` for every item, as plain tasks (global stages' passes, ingest)."""
        ...

    def map_actors(self, make: Callable[[], Any], method: str, items: Sequence[T], desc: str = "",
                   cost: Callable[[T], float] | None = None, size: Callable[[T], int] | None = None,
                   resources: Resources | None = None) -> list:
        """`make().method(item)` for every item on long-lived workers: `make()` runs once per
        worker (a model loads once), each worker asking for `resources`."""
        ...


def group_by_size(items: Sequence[T], size: Callable[[T], int], workers: int,
                  target: int = TASK_BYTES) -> list[list[int]]:
    """Consecutive item indices grouped into tasks of about `target` bytes, but never fewer tasks
    than twice the workers allow (a small run still spreads over every worker)."""
    sizes = [max(1, int(size(x))) for x in items]  # an empty item still costs its dispatch
    goal = max(1, min(target, sum(sizes) // max(1, 2 * workers)))
    groups: list[list[int]] = []
    current: list[int] = []
    filled = 0
    for i, n in enumerate(sizes):
        current.append(i)
        filled += n
        if filled >= goal:
            groups.append(current)
            current, filled = [], 0
    if current:
        groups.append(current)
    return groups


class LocalExecutor:
    """The in-process `Executor`: every operation, in order, in this process (no Ray). Runs give
    the same output as on Ray; it serves `curate run --executor local`, tests and debugging."""

    def __init__(self, workers: int | None = None):
        self.workers = 1  # one process; `workers` is accepted for symmetry with RayExecutor

    def map(self, fn: Callable[[T], R], items: Sequence[T], desc: str = "",
            cost: Callable[[T], float] | None = None, size: Callable[[T], int] | None = None) -> list[R]:
        return [fn(x) for x in items]

    def map_actors(self, make: Callable[[], Any], method: str, items: Sequence[T], desc: str = "",
                   cost: Callable[[T], float] | None = None, size: Callable[[T], int] | None = None,
                   resources: Resources | None = None) -> list:
        if not items:
            return []
        call = getattr(make(), method)
        return [call(x) for x in items]


def concat(tables: Iterable[pa.Table], schema: pa.Schema | None = None) -> pa.Table:
    tables = list(tables)
    if not tables:
        if schema is None:
            raise ValueError("concat of nothing needs a schema")
        return schema.empty_table()
    return pa.concat_tables(tables, promote_options="default")


def config_dict(obj: Any) -> dict:
    """A stage's config as a plain dict, for hashing (dataclass fields only)."""
    from dataclasses import asdict, is_dataclass

    return asdict(obj) if is_dataclass(obj) else dict(obj)


@dataclass
class GlobalContext:
    """What a global stage (`step = global`) gets from the runner.

    Outputs it must write, for every input part `P` (the input parquet's stem):
      - `stage_dir / f"{P}.parquet"`: the kept documents (input columns + the stage's new ones),
      - `rejected_dir / f"{P}.parquet"`: `REJECTED_SCHEMA` rows,
      - its marker, written by `stages.ledger.write_marker` with `input_fingerprint`,
        `config_hash` and `counts` = {in, kept, rejected, quarantined, rejected_by_reason}.
    Intermediate sub-steps live under `work_dir` and resume through their own markers.
    """

    stage_dir: Any  # Path
    work_dir: Any  # Path
    rejected_dir: Any  # Path
    executor: Executor
    config_hash: str


@runtime_checkable
class GlobalStage(Protocol):
    """A stage that needs all shards at once (deduplication)."""

    name: str

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        """`inputs`: sorted list of input part Paths (the previous stage's outputs)."""
