"""Pieces both deduplication stages share: text normalization, the keeper rule, hash partitions
(the shuffle) and resumable sub-steps.

A global stage here is a chain of sub-steps. Each sub-step is a list of picklable tasks that the
`Executor` runs in parallel; a task writes its files atomically, then a marker under
`work_dir/<step>/_done/`. A rerun skips every task whose marker matches the step's fingerprint, so
killing a run at any point and running it again gives the same result (docs/internals.md, "The run
directory"). Data moves between sub-steps only through Parquet files partitioned by hash: task
`s` of one step writes `to-<d>/from-<s>.parquet` for each destination `d` of the next, so no
process ever holds more than one partition.
"""

from __future__ import annotations

import os
import re
import shutil
import string
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.records.marker import Marker
from curate.stages import ledger, shardio
from curate.stages.base import Executor

# --------------------------------------------------------------------------------------------
# Text normalization

# ASCII punctuation and symbols (P* and S* below 128) go through `translate` with 1:1 ASCII
# tables (CPython's fast paths); runs of non-ASCII characters, rare in most text, are looked up
# per character in a lazily filled table.
_ASCII_PUNCT = str.maketrans({c: " " for c in string.punctuation})
_ASCII_PUNCT_BYTES = bytes.maketrans(string.punctuation.encode(), b" " * len(string.punctuation))
_NON_ASCII = re.compile(r"[^\x00-\x7f]+")
_NON_ASCII_MAP: dict[str, str] = {}


def _non_ascii_run(m: re.Match) -> str:
    out = []
    for ch in m.group():
        r = _NON_ASCII_MAP.get(ch)
        if r is None:
            r = _NON_ASCII_MAP[ch] = " " if unicodedata.category(ch)[0] in "PS" else ch
        out.append(r)
    return "".join(out)


def strip_punctuation(text: str) -> str:
    """Every Unicode punctuation (P*) and symbol (S*) character replaced by a space, so that
    "end.Next" still splits into two words."""
    if text.isascii():
        return text.translate(_ASCII_PUNCT)
    text = text.encode("utf-8").translate(_ASCII_PUNCT_BYTES).decode("utf-8")
    return _NON_ASCII.sub(_non_ascii_run, text)


def normalize_text(
    text: str, lowercase: bool = True, punctuation: bool = True, whitespace: bool = True, nfkc: bool = False
) -> str:
    """The text that dedup compares: optionally NFKC-folded, lowercased, punctuation and symbols
    replaced by spaces, and runs of whitespace collapsed to one space (ends stripped)."""
    if nfkc:
        text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    if punctuation:
        text = strip_punctuation(text)
    if whitespace:
        text = " ".join(text.split())
    return text


# --------------------------------------------------------------------------------------------
# Keeper rule


def resolve_keeper_column(setting: str, columns: Sequence[str]) -> str | None:
    """The column whose highest value picks the keeper, or None (then: smallest id).

    `setting` "auto" takes the first `quality_*` column present (sorted by name); "" or "id"
    means none; a named column that the input lacks also falls back to the smallest id.
    """
    if setting in ("", "id"):
        return None
    if setting == "auto":
        quality = sorted(c for c in columns if c.startswith("quality_") and c != "quality_bucket")
        return quality[0] if quality else None
    return setting if setting in columns else None


MAX_PARTITIONS = 65536


def validate_shared(cfg: Any) -> None:
    """The checks of the fields both dedup configs share (`keeper_column`, `num_partitions`,
    `batch_size`), so that the two stages accept the same values."""
    if not isinstance(cfg.keeper_column, str):
        raise ValueError(f"keeper_column must be a column name, 'auto' or '', got {cfg.keeper_column!r}")
    if not 0 <= cfg.num_partitions <= MAX_PARTITIONS:
        raise ValueError(f"num_partitions must be 0 (auto) or 1..{MAX_PARTITIONS}, got {cfg.num_partitions}")
    if cfg.batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {cfg.batch_size}")


def keeper_values(batch: pa.RecordBatch | pa.Table, column: str | None) -> pa.Array:
    """The keeper column of `batch` as float64 (nulls when there is none)."""
    n = batch.num_rows
    if column is None:
        return pa.nulls(n, pa.float64())
    col = batch.column(column)
    try:
        return col.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise ValueError(f"keeper_column {column!r} must be numeric, it is {col.type}") from e


def keeper_order(table: pa.Table, group_col: str, quality_col: str | None) -> np.ndarray:
    """Row indices of `table` sorted so that each group's keeper comes first within its group.

    Keeper = highest `quality_col` (nulls last), ties and no quality column: smallest `id`,
    then smallest `uid` (input order), so equal ids still give one answer.
    """
    keys = [(group_col, "ascending")]
    if quality_col is not None:
        keys.append((quality_col, "descending"))
    keys.append(("id", "ascending"))
    if "uid" in table.column_names:
        keys.append(("uid", "ascending"))
    try:
        return pc.sort_indices(table, sort_keys=[(k, o, "at_end") for k, o in keys]).to_numpy()
    except (TypeError, ValueError, pa.ArrowInvalid):  # pyarrow < 25: one placement for all keys
        return pc.sort_indices(table, sort_keys=keys, null_placement="at_end").to_numpy()


def group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


# --------------------------------------------------------------------------------------------
# Hashing helpers (vectorized, 64-bit)

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: a bijection that spreads bits (wrapping arithmetic)."""
    h = h.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> _S33
        h *= _M1
        h ^= h >> _S33
        h *= _M2
        h ^= h >> _S33
    return h


def partition_of(keys: np.ndarray, n: int) -> np.ndarray:
    """Hash partition (0..n-1) of int64/uint64 keys; mixed so sequential ids spread evenly."""
    return (fmix64(keys.astype(np.uint64)) % np.uint64(n)).astype(np.int64)


# --------------------------------------------------------------------------------------------
# Shuffle files


def inbox(step_dir: Path, dest: int) -> Path:
    return Path(step_dir) / f"to-{dest:05d}"


def write_partitioned(table: pa.Table, dest: np.ndarray, step_dir: Path, src: int) -> int:
    """Write the rows of `table` to `step_dir/to-<dest>/from-<src>.parquet`; returns rows written."""
    if table.num_rows == 0:
        return 0
    order = np.argsort(dest, kind="stable")
    sorted_dest = dest[order]
    table = table.take(pa.array(order))
    starts = group_starts(sorted_dest)
    ends = np.r_[starts[1:], len(sorted_dest)]
    for s, e in zip(starts, ends):
        shardio.write_parquet(inbox(step_dir, int(sorted_dest[s])) / f"from-{src:05d}.parquet", table.slice(s, e - s))
    return table.num_rows


def read_inbox(step_dir: Path, dest: int, n_src: int, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Everything sent to partition `dest` by sources 0..n_src-1 (in source order)."""
    tables = []
    for s in range(n_src):
        p = inbox(step_dir, dest) / f"from-{s:05d}.parquet"
        if p.exists():
            tables.append(pq.read_table(p, columns=columns, schema=schema))
    if not tables:
        sch = schema if columns is None else pa.schema([schema.field(c) for c in columns])
        return sch.empty_table()
    return pa.concat_tables(tables)


# --------------------------------------------------------------------------------------------
# Resumable sub-steps


@dataclass(frozen=True)
class Step:
    """Where a sub-step's files live and what makes its markers valid."""

    dir: str  # work_dir/<step name>
    fingerprint: str  # inputs + step identity; a marker must carry it
    config_hash: str


@dataclass(frozen=True)
class _Call:
    fn: Callable[[Any], dict]
    task: Any
    step: Step
    name: str


def _run_call(call: _Call) -> dict:
    t0 = time.time()
    result = call.fn(call.task)
    marker = Marker.new(call.step.fingerprint, call.step.config_hash, result=result, seconds=round(time.time() - t0, 3))
    ledger.write_marker(Path(call.step.dir), call.name, marker)
    return result


def run_step(executor: Executor, step: Step, fn: Callable[[Any], dict], tasks: Sequence[Any], desc: str,
             size: Callable[[Any], int] | None = None) -> list[dict]:
    """Run `fn` on every task not already done (marker matches); results in task order. `size(task)`
    (bytes it reads) lets the executor give several small tasks to one worker call."""
    names = [f"task-{i:05d}" for i in range(len(tasks))]
    results: list[dict | None] = []
    todo: list[_Call] = []
    for name, task in zip(names, tasks):
        m = ledger.current(Path(step.dir), name, step.fingerprint, step.config_hash)
        if m is not None:
            results.append(m.extra["result"])
        else:
            results.append(None)
            todo.append(_Call(fn, task, step, name))
    by_call = (lambda call: size(call.task)) if size is not None else None
    done = iter(executor.map(_run_call, todo, desc=desc, size=by_call) if todo else [])
    return [r if r is not None else next(done) for r in results]


def reset_work_dir(work_dir: Path, fingerprint: str) -> None:
    """Start `work_dir` afresh when the inputs or config changed (stale shuffle files would mix in)."""
    work_dir = Path(work_dir)
    stamp = work_dir / "FINGERPRINT"
    if stamp.exists() and stamp.read_text().strip() == fingerprint:
        return
    if work_dir.exists():
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    shardio.atomic_write_bytes(stamp, fingerprint.encode())


def _digest(path: str) -> list:
    return [os.path.basename(path), shardio.file_digest(Path(path))]


def inputs_fingerprint(executor: Executor, inputs: Sequence[Path], config_hash: str) -> str:
    """One hash over every input's content: a global stage's output depends on all of them."""
    digests = executor.map(_digest, [str(p) for p in inputs], desc="", size=os.path.getsize)
    return shardio.stable_hash({"inputs": digests, "config": config_hash})


def part_offsets(inputs: Sequence[Path]) -> np.ndarray:
    """Global row numbers: part i holds uids offsets[i] .. offsets[i+1]-1."""
    counts = [pq.ParquetFile(p).metadata.num_rows for p in inputs]
    return np.r_[0, np.cumsum(counts, dtype=np.int64)].astype(np.int64)


def part_of_uid(uids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    return np.searchsorted(offsets, uids, side="right") - 1
