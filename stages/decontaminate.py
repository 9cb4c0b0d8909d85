"""Map stage `decontaminate`: drop or flag documents that share word n-grams with evaluation sets.

Both sides are normalised the same way (`word_ngrams`): NFKC, lower case, words = runs of
Unicode letters and digits, then every window of `n` consecutive words (13 by default, as in
GPT-3's and lm-eval-harness's decontamination) hashed to a 64-bit integer. An evaluation item is
one record of a set; every string in it (question, answer, choices, ...) gives its own n-grams,
so n-grams never straddle two fields. A text of fewer than `n` words has no n-gram: such items
cannot be found, and are counted as `items_without_ngrams` in the report.

The eval-side index (`EvalIndex`) is built once per worker in `setup()` from the set files: one
sorted uint64 array of n-gram hashes and, beside it, the int32 number of the item each comes
from: 12 bytes per (n-gram, item) pair, i.e. 12 MB per million eval n-grams. Document n-grams
are looked up with one `searchsorted` per batch.

Per match the stage counts `decontaminate_matches[json [set, item, doc id]] = matching n-grams`,
summed into the stage's stats.json (`curate stats` prints it per set).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from stages.base import StageOutput, add_columns, split_by_reason
from stages.shardio import file_digest, stable_hash

MATCHES = "decontaminate_matches"
COLUMN = "contaminated_sets"
_EVAL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".parquet")


# ------------------------------------------------------------------------------- n-gram hashing
def _odd_multipliers(n: int) -> np.ndarray:
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def _fmix64(h: np.ndarray) -> np.ndarray:
    from stages.dedup.common import fmix64

    return fmix64(h)


def word_ngrams(texts: pa.Array | list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, text index) of every n-gram of normalised words in `texts`, in text order.

    Words are hashed once per distinct word (xxh64 of the dictionary-encoded batch); an n-gram's
    hash is fmix64(sum_j word[i+j] * odd_j) with wrapping uint64 arithmetic, vectorised over the
    batch, and windows that would cross from one text into the next are left out."""
    import xxhash

    arr = pa.array(texts, pa.string()) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts
    norm = pc.utf8_lower(pc.utf8_normalize(arr, "NFKC"))
    spaced = pc.utf8_trim_whitespace(pc.replace_substring_regex(norm, r"[^\p{L}\p{N}]+", " "))
    lists = pc.split_pattern(spaced, " ")
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    words = pc.list_flatten(lists)
    owner = pc.list_parent_indices(lists).to_numpy()
    nonempty = pc.greater(pc.utf8_length(words), 0)
    words = pc.filter(words, nonempty)
    owner = owner[nonempty.to_numpy(zero_copy_only=False)]
    if len(words) < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64)
    enc = pc.dictionary_encode(words)
    uniq = np.fromiter((xxhash.xxh64_intdigest(w) for w in enc.dictionary.to_pylist()), np.uint64,
                       count=len(enc.dictionary))
    w = uniq[enc.indices.to_numpy()]
    m = len(w) - n + 1
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for j, mult in enumerate(_odd_multipliers(n)):
            h += w[j:j + m] * mult
    valid = owner[:m] == owner[n - 1:]
    return _fmix64(h[valid]), owner[:m][valid]


# --------------------------------------------------------------------------------- eval sets
@dataclass
class EvalSetSpec:
    """One evaluation set: JSONL (.jsonl/.json/.ndjson, optionally .gz) or Parquet records."""

    name: str
    """Set name: the drop reason is `contaminated:<name>` and `contaminated_sets` lists it."""
    path: str
    """A file, a directory (its JSONL/Parquet files, recursively) or a glob; e.g. lm-eval task
    data saved to disk. Relative paths are relative to the working directory."""
    fields: list[str] | None = None
    """Record fields whose strings count (e.g. [question, answer]); null: every string field,
    including strings inside lists and nested records (e.g. `choices`)."""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"name: {self.name!r} must be letters, digits, '_', '-' or '.' (it names a reason)")
        if self.fields is not None and not self.fields:
            raise ValueError("fields: give at least one field name, or null for every string field")

    def files(self) -> list[Path]:
        p = self.path
        if any(c in p for c in "*?["):
            found = sorted(Path(x) for x in glob.glob(p, recursive=True) if os.path.isfile(x))
        elif os.path.isdir(p):
            found = sorted(x for x in Path(p).rglob("*") if x.is_file() and x.name.endswith(_EVAL_SUFFIXES))
        else:
            found = [Path(p)] if os.path.isfile(p) else []
        if not found:
            raise FileNotFoundError(f"eval set {self.name!r}: {p!r} matches no JSONL or Parquet file")
        return [f.resolve() for f in found]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


def read_items(spec: EvalSetSpec) -> Iterator[tuple[str, list[str]]]:
    """(item key, strings) per record: the key is the record's `id` when it has one, else
    `<file name>:<line or row>`."""
    for path in spec.files():
        if path.name.endswith(".parquet"):
            import pyarrow.parquet as pq

            records = enumerate(pq.read_table(path).to_pylist(), 1)
        else:
            opener = gzip.open if path.name.endswith(".gz") else open
            with opener(path, "rt", encoding="utf-8") as f:
                lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
            records = []
            for i, line in lines:
                try:
                    records.append((i, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"eval set {spec.name!r}: {path}, line {i}: not JSON ({e.msg})") from None
        for i, rec in records:
            if not isinstance(rec, dict):
                raise ValueError(f"eval set {spec.name!r}: {path}, record {i}: not an object")
            key = str(rec["id"]) if rec.get("id") is not None else f"{path.name}:{i}"
            if spec.fields is None:
                values = [v for k, v in rec.items() if k != "id"]
            else:
                missing = [f for f in spec.fields if f not in rec]
                if len(missing) == len(spec.fields):
                    raise ValueError(f"eval set {spec.name!r}: {path}, record {i} has none of the fields "
                                     f"{spec.fields}; it has {sorted(rec)}")
                values = [rec[f] for f in spec.fields if f in rec]
            yield key, list(_strings(values))


class EvalIndex:
    """Sorted n-gram hashes of every eval set, each with the item it comes from."""

    def __init__(self, sets: list[EvalSetSpec], n: int):
        self.set_names = [s.name for s in sets]
        self.item_keys: list[str] = []
        item_set: list[int] = []
        self.items_total = {s.name: 0 for s in sets}
        self.items_without_ngrams = {s.name: 0 for s in sets}
        hashes, owners = [], []
        for k, spec in enumerate(sets):
            strings, owner_of_string = [], []
            for key, texts in read_items(spec):
                item = len(self.item_keys)
                self.item_keys.append(key)
                item_set.append(k)
                self.items_total[spec.name] += 1
                strings += texts
                owner_of_string += [item] * len(texts)
            h, s = word_ngrams(strings, n)
            owner_arr = np.asarray(owner_of_string, np.int64)[s] if len(s) else np.empty(0, np.int64)
            found = set(owner_arr.tolist())
            first = len(self.item_keys) - self.items_total[spec.name]
            self.items_without_ngrams[spec.name] = sum(i not in found for i in range(first, len(self.item_keys)))
            hashes.append(h)
            owners.append(owner_arr)
        h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        o = np.concatenate(owners).astype(np.int32) if owners else np.empty(0, np.int32)
        order = np.lexsort((o, h))
        h, o = h[order], o[order]
        keep = np.r_[True, (h[1:] != h[:-1]) | (o[1:] != o[:-1])] if len(h) else np.empty(0, bool)
        self.hashes, self.items = h[keep], o[keep]
        self.item_set = np.asarray(item_set, np.int16)

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.items.nbytes

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, items) for every (query n-gram, eval item) pair that matches."""
        if not len(self.hashes) or not len(hashes):
            return np.empty(0, np.int64), np.empty(0, np.int32)
        lo = np.searchsorted(self.hashes, hashes, side="left")
        hit = lo < len(self.hashes)
        hit[hit] = self.hashes[lo[hit]] == hashes[hit]
        q = np.flatnonzero(hit)
        if not len(q):
            return q, np.empty(0, np.int32)
        hi = np.searchsorted(self.hashes, hashes[q], side="right")
        reps = hi - lo[q]
        qpos = np.repeat(q, reps)
        # positions lo[q] .. hi-1 for each hit, flattened
        starts = np.repeat(lo[q] - np.r_[0, np.cumsum(reps)[:-1]], reps)
        return qpos, self.items[starts + np.arange(len(qpos))]


# ------------------------------------------------------------------------------------ the stage
@dataclass
class DecontaminateConfig:
    """Config of the `decontaminate` stage."""

    sets: list[EvalSetSpec] = field(default_factory=list)
    """Evaluation sets, each `{name, path, fields}` (see EvalSetSpec)."""
    n: int = 13
    """Words per n-gram (13 as in GPT-3 and lm-eval-harness)."""
    mode: Literal["drop", "flag"] = "drop"
    """`drop`: reject matching documents with reason `contaminated:<set>` (the first set, in
    config order, that matched); `flag`: keep them and list the sets in `contaminated_sets`."""
    min_ngrams: int = 1
    """A document matches a set when it shares at least this many distinct n-grams with it."""
    max_listed_matches: int = 10000
    """At most this many (set, item, document) matches listed per batch in the stats (the rest
    are counted as `matches_not_listed`)."""
    sets_stamp: str | None = None
    """Content digest of the set files, filled in at load (part of the config hash, so a changed
    eval set reruns the stage)."""

    def __post_init__(self):
        if not self.sets:
            raise ValueError("sets: give at least one evaluation set {name, path}")
        names = [s.name for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"sets: set names must be unique, got {names}")
        if self.n < 1:
            raise ValueError(f"n: words per n-gram must be >= 1, got {self.n}")
        if self.mode not in ("drop", "flag"):
            raise ValueError(f"mode: {self.mode!r}; valid: drop, flag")
        if self.min_ngrams < 1:
            raise ValueError(f"min_ngrams: must be >= 1, got {self.min_ngrams}")
        try:
            self.sets_stamp = stable_hash([[str(f), file_digest(f)] for s in self.sets for f in s.files()])
        except FileNotFoundError:
            self.sets_stamp = None  # checked again, with the error, when the stage starts

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [COLUMN] if self.mode == "flag" else []


class DecontaminateStage:
    """Drops (or flags) documents sharing n-grams with the configured evaluation sets."""

    def __init__(self, config: DecontaminateConfig, name: str = "decontaminate"):
        self.config = config
        self.name = name
        self.index: EvalIndex | None = None

    def setup(self) -> None:
        self.index = EvalIndex(self.config.sets, self.config.n)

    def process(self, table: pa.Table) -> StageOutput:
        if self.index is None:
            self.setup()
        cfg, index = self.config, self.index
        hashes, doc_of = word_ngrams(table.column("text"), cfg.n)
        qpos, items = index.lookup(hashes)
        # distinct n-grams per (document, set) and per (document, item)
        docs, sets = doc_of[qpos], index.item_set[items]
        per_set: dict[tuple[int, int], set] = {}
        per_item: dict[tuple[int, int], set] = {}
        for d, s, it, h in zip(docs.tolist(), sets.tolist(), items.tolist(), hashes[qpos].tolist()):
            per_set.setdefault((d, s), set()).add(h)
            per_item.setdefault((d, it), set()).add(h)
        hit_sets: dict[int, list[int]] = {}
        for (d, s), hs in per_set.items():
            if len(hs) >= cfg.min_ngrams:
                hit_sets.setdefault(d, []).append(s)
        ids = table.column("id").to_pylist()
        counters: dict[str, Any] = {"ngrams_checked": len(hashes), "matches_not_listed": 0}
        listed: dict[str, int] = {}
        for (d, it), hs in sorted(per_item.items()):
            s = int(index.item_set[it])
            if s not in hit_sets.get(d, []):
                continue
            if len(listed) < cfg.max_listed_matches:
                listed[json.dumps([index.set_names[s], index.item_keys[it], ids[d]])] = len(hs)
            else:
                counters["matches_not_listed"] += 1
        counters[MATCHES] = listed
        names = [[index.set_names[s] for s in sorted(hit_sets.get(d, []))] for d in range(table.num_rows)]
        counters.update({f"contaminated:{s}": 0 for s in index.set_names})  # every set shows in the stats
        for found in names:
            for s in found:
                counters[f"contaminated:{s}"] = counters.get(f"contaminated:{s}", 0) + 1
        if cfg.mode == "flag":
            out = add_columns(table, self.name, {COLUMN: pa.array(names, pa.list_(pa.string()))})
            return StageOutput(kept=out, counters=counters)
        reasons = [f"contaminated:{found[0]}" if found else None for found in names]
        return split_by_reason(table, self.name, reasons, counters)
