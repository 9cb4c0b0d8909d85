"""Evaluation sets of a run, written by `curate pack` into `RUN/eval/` and read by `curate eval`.

Three kinds, each a Parquet file `RUN/eval/<name>.parquet` with `id, text, source, domain,
n_tokens, group` (stages/heldout/holdout.py):

- `group`: the held-out slice of each mixture group (`--eval-fraction`, `--eval-max-docs`),
  written by the group's packing task;
- `where`: `--eval-where NAME=SQL`, the documents a predicate over the catalog selects (capped at
  `--eval-max-docs`, chosen by the same id hash), held out of every group's training rows;
- `jsonl`: `--eval-jsonl NAME=FILE`, outside text (one `{"text": ...}` object a line, optional
  `id`, `source`, `domain`), copied as is; it never was training data (the `decontaminate` stage
  removes its overlaps from the corpus).

`RUN/eval/index.json` lists the sets of the latest pack; files of sets no longer listed are removed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import pyarrow as pa

from curate.pipeline.errors import CurateError
from curate.records.jsonl import json_objects
from curate.stages import shardio

from curate.stages.heldout import holdout
EVAL_DIR = "eval"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class ExtraSet:
    """An evaluation set named on the command line: a catalog predicate or a JSONL file."""

    name: str
    kind: str  # "where" or "jsonl"
    value: str


def parse_extra(specs: Iterable[str], kind: str, flag: str | None = None) -> list[ExtraSet]:
    """`NAME=VALUE` strings of `--eval-where` / `--eval-jsonl` (or `flag`)."""
    out = []
    for spec in specs:
        name, sep, value = spec.partition("=")
        name = name.strip()
        if not sep or not value.strip() or not NAME_RE.match(name):
            raise CurateError(f"{flag or '--eval-' + kind} {spec!r}: expected NAME=VALUE with a NAME of letters, digits, "
                              f"'_', '.', '-'")
        out.append(ExtraSet(name, kind, value.strip()))
    return out


def check_names(extra: list[ExtraSet], groups: Iterable[str]) -> None:
    seen = set(groups)
    for s in extra:
        if s.name in seen:
            raise CurateError(f"evaluation set {s.name!r}: the name is taken (by a mixture group or another set)")
        seen.add(s.name)


def read_jsonl_set(path: Path) -> pa.Table:
    """A JSONL evaluation set; a line that is not an object with a string `text` is an error naming it."""
    rows = []
    try:
        for n, d in json_objects(path, "evaluation documents"):
            if not isinstance(d.get("text"), str):
                raise ValueError(f"{path}:{n}: an evaluation line is an object with a string \"text\"")
            rows.append({"id": str(d.get("id", f"{path.stem}:{n}")), "text": d["text"],
                         "source": d.get("source"), "domain": d.get("domain")})
    except (ValueError, OSError) as e:
        raise CurateError(f"--eval-jsonl: {e}") from None
    return holdout.eval_table(pa.Table.from_pylist(rows), None)


def where_ids(run: Path, predicate: str, max_docs: int) -> list[str]:
    """Ids the predicate selects in the catalog; the `max_docs` with the smallest id hashes."""
    from curate.pipeline.catalog import db as catalog

    try:
        ids = catalog.query(run, f"SELECT id FROM docs WHERE ({predicate})").column("id").to_pylist()
    except Exception as e:  # QueryError or DuckDB's parser: the message names the problem
        raise CurateError(f"--eval-where {predicate!r}: {e}") from None
    return holdout.smallest(ids, holdout.id_keys(ids), max_docs)


def write_extra(run: Path, extra: list[ExtraSet], parts: list[str], max_docs: int) -> tuple[dict, tuple[str, ...]]:
    """Write the `where` and `jsonl` sets; returns their index entries and the ids held out of training."""
    entries, exclude = {}, set()
    for s in extra:
        path = run / EVAL_DIR / f"{s.name}.parquet"
        if s.kind == "jsonl":
            table = read_jsonl_set(Path(s.value))
        else:
            ids = where_ids(run, s.value, max_docs)
            exclude.update(ids)
            table = holdout.collect(parts, ids)
        entries[s.name] = {"kind": s.kind, s.kind: s.value, "n_docs": holdout.write_eval_set(path, table),
                           "path": f"{EVAL_DIR}/{s.name}.parquet"}
    return entries, tuple(sorted(exclude))


def write_index(run: Path, sets: dict[str, dict]) -> None:
    """`RUN/eval/index.json`; removes the files of sets an earlier pack wrote and this one did not."""
    d = run / EVAL_DIR
    d.mkdir(parents=True, exist_ok=True)
    for p in d.glob("*.parquet"):
        if p.stem not in sets:
            p.unlink()
    shardio.atomic_write_json(d / "index.json", {"sets": sets})


def read_index(run: Path) -> dict[str, dict]:
    """The evaluation sets of a packed run: name -> entry (`path` relative to the run)."""
    path = Path(run) / EVAL_DIR / "index.json"
    if not path.is_file():
        raise CurateError(f"{run} has no evaluation sets ({path} is missing): run `curate pack` first")
    return json.loads(path.read_text())["sets"]
