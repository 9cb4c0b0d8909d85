"""Held-out evaluation documents: a deterministic slice of each mixture group, kept out of training.

A document is a candidate when a hash of its id falls below `eval_fraction` of the hash range;
of a group's candidates, the `eval_max_docs` with the smallest hashes are held out. The choice
depends only on the id, so it is the same on every rerun, on any number of workers and whatever
the shard layout, and a document stays held out when more data is added (unless the cap pushes
it out). The group's packing task (`stages/tokens/packing.py`) leaves these documents out of
`tokens.bin` and the rows, and writes them to `RUN/eval/<group>.parquet`.

Evaluation sets given by a SQL predicate over the catalog are held out the same way, from every
group: their ids reach the packing tasks as an exclusion list (`pipeline/catalog/eval_sets.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages import docshard, shardio
from curate.stages.idhash import salted_keys

SALT = "curate-eval:"
# The columns an evaluation set carries; `domain` and `source` give per-domain/per-source figures.
EVAL_COLUMNS = ("id", "text", "source", "domain", "n_tokens", "group")
EVAL_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string()), ("source", pa.string()),
                         ("domain", pa.string()), ("n_tokens", pa.int64()), ("group", pa.string())])


def id_keys(ids: Iterable[str]) -> np.ndarray:
    """A uniform 64-bit key per id (`idhash.salted_keys` with this module's salt)."""
    return salted_keys(ids, SALT)


def threshold(fraction: float) -> np.uint64:
    return np.uint64(min(int(fraction * 2.0 ** 64), 2 ** 64 - 1))


def smallest(ids: list[str], keys: np.ndarray, cap: int) -> list[str]:
    """The `cap` ids with the smallest keys (ties broken by id), sorted by key."""
    order = np.lexsort((np.array(ids, dtype=object), keys)) if ids else np.zeros(0, np.int64)
    return [ids[i] for i in order[:cap]]


def select_group(parts: Iterable[str], group: str, fraction: float, max_docs: int) -> list[str]:
    """Ids held out from `group` over the tokenize shards `parts`."""
    if fraction <= 0 or max_docs <= 0:
        return []
    cut = threshold(fraction)
    ids: list[str] = []
    keys: list[np.ndarray] = []
    for part in parts:
        t = docshard.read_docs(Path(part), columns=["id", "group"])
        sel = pc.fill_null(pc.equal(t.column("group"), group), False)
        got = t.column("id").filter(sel).to_pylist()
        k = id_keys(got)
        keep = k < cut
        ids += [i for i, m in zip(got, keep) if m]
        keys.append(k[keep])
    return smallest(ids, np.concatenate(keys) if keys else np.zeros(0, np.uint64), max_docs)


def eval_table(table: pa.Table, group: str | None) -> pa.Table:
    """`table`'s rows in the evaluation-set schema (missing columns null)."""
    n = len(table)
    cols = {}
    for f in EVAL_SCHEMA:
        if f.name == "group" and group is not None:
            cols[f.name] = pa.array([group] * n, pa.string())
        elif f.name in table.column_names:
            cols[f.name] = table.column(f.name).cast(f.type)
        else:
            cols[f.name] = pa.nulls(n, f.type)
    return pa.table(cols, schema=EVAL_SCHEMA)


def collect(parts: Iterable[str], ids: Iterable[str], group: str | None = None) -> pa.Table:
    """The documents with `ids` from the shards `parts`, in shard order, as an evaluation set."""
    wanted = pa.array(sorted(set(ids)), pa.string())
    tables = []
    if len(wanted):
        for part in parts:
            have = docshard.document_columns(Path(part))
            t = docshard.read_docs(Path(part), columns=[c for c in EVAL_COLUMNS if c in have])
            tables.append(eval_table(t.filter(pc.is_in(t.column("id"), value_set=wanted)), group))
    return pa.concat_tables(tables) if tables else EVAL_SCHEMA.empty_table()


def write_eval_set(path: Path, table: pa.Table) -> int:
    """Write an evaluation set atomically; returns its document count."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    shardio.write_parquet(Path(path), table)
    return len(table)
