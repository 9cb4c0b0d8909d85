"""Map stage `decontaminate`: drop or flag documents that share word n-grams with evaluation sets.

Both sides are normalised the same way (`word_ngrams`): NFKC, lower case, words = runs of
Unicode letters and digits, then every window of `n` consecutive words (13 by default, as in
GPT-3's and lm-eval-harness's decontamination) hashed to a 64-bit integer. An evaluation item is
one record of a set; every string in it (question, answer, choices, ...) gives its own n-grams,
so n-grams never straddle two fields. A text of fewer than `n` words has no n-gram: an item made
only of such texts cannot be found (`EvalIndex.items_without_ngrams` counts them per set).

The eval-side index (`EvalIndex`) is built once per worker in `setup()` from the set files: one
sorted uint64 array of n-gram hashes and, beside it, the int32 number of the item each comes
from (12 bytes per (n-gram, item) pair), plus a bitmap over the hashes' top bits (2-4 bytes per
n-gram): 14-16 MB per million eval n-grams. Document n-grams are tested against the bitmap, and
the few that pass are looked up with `searchsorted`.

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

from curate.stages.base import StageOutput, add_columns, split_by_reason
from curate.stages.shardio import file_digest, stable_hash

MATCHES = "decontaminate_matches"
COLUMN = "contaminated_sets"
_EVAL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".parquet")


# ------------------------------------------------------------------------------- n-gram hashing
def _odd_multipliers(n: int) -> np.ndarray:
    rng = np.random.default_rng(0x5EED)
    return rng.integers(0, 2**63, size=n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


_ALNUM: np.ndarray | None = None


def _alnum() -> np.ndarray:
    """Per code point: is it a letter or a digit (`str.isalnum`)? Built once per process (0.3 s)."""
    global _ALNUM
    if _ALNUM is None:
        _ALNUM = np.fromiter((chr(c).isalnum() for c in range(0x110000)), bool, count=0x110000)
    return _ALNUM


def _word_bytes(b: np.ndarray) -> np.ndarray:
    """Per UTF-8 byte: does it belong to a letter or digit? ASCII by comparisons; each other
    character's code point is decoded from its lead byte and looked up, and its continuation
    bytes take the same answer (the work is proportional to the non-ASCII bytes)."""
    folded = b | 0x20
    isword = ((b >= 0x30) & (b <= 0x39)) | ((folded >= 0x61) & (folded <= 0x7A))
    high = np.flatnonzero(b >= 0x80)
    if len(high):
        p = np.r_[b, np.zeros(3, np.uint8)]
        is_lead = p[high] >= 0xC0
        li = high[is_lead]
        lead, c1, c2, c3 = (p[li + k].astype(np.uint32) & m for k, m in enumerate((0xFF, 0x3F, 0x3F, 0x3F)))
        cp = np.where(lead < 0xE0, ((lead & 0x1F) << 6) | c1,
                      np.where(lead < 0xF0, ((lead & 0x0F) << 12) | (c1 << 6) | c2,
                               ((lead & 0x07) << 18) | (c1 << 12) | (c2 << 6) | c3))
        char_is_word = _alnum()[np.minimum(cp, 0x10FFFF)]
        isword[high] = char_is_word[np.maximum(np.cumsum(is_lead) - 1, 0)] if len(li) else False
    return isword


def _words(arr: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(words, text index of each word) of lower-cased `arr`: runs of letters and digits. Word
    boundaries are found on the UTF-8 bytes with lookup tables (a Unicode regex over every text
    ran at a third of the speed); the words are then cut out of the same buffer as one string
    array."""
    arr = pc.utf8_lower(arr).cast(pa.large_string())
    _, offsets_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(offsets_buf, np.int64)[arr.offset:arr.offset + len(arr) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    isword = np.zeros(hi - lo + 1, bool)  # one non-word byte past the end closes the last word
    isword[:-1] = _word_bytes(data[lo:hi])
    text_start = np.zeros(len(isword), bool)
    text_start[offsets[:-1] - lo] = True
    prev = np.r_[False, isword[:-1]] & ~text_start
    starts = np.flatnonzero(isword & ~prev)
    after = np.r_[isword[1:], False] & ~np.r_[text_start[1:], True]
    ends = np.flatnonzero(isword & ~after) + 1
    # One string array over the buffer alternating gap, word, gap, ...: the words are every other element.
    bounds = np.empty(2 * len(starts) + 2, np.int64)
    bounds[0], bounds[-1] = 0, hi - lo
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    pieces = pa.LargeStringArray.from_buffers(len(bounds) - 1, pa.py_buffer((bounds + lo).tobytes()), data_buf)
    words = pieces.take(pa.array(np.arange(1, len(bounds) - 1, 2)))
    owner = np.searchsorted(offsets[1:] - lo, starts, side="right")
    return words, owner


def word_ngrams(texts: pa.Array | list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, text index) of every n-gram of normalised words in `texts`, in text order.

    Words are hashed once per distinct word (xxh64 of the dictionary-encoded batch); an n-gram's
    hash is sum_j word[i+j] * odd_j with wrapping uint64 arithmetic (the word hashes are already
    uniform, so the sum needs no finaliser), vectorised over the batch, and windows that would
    cross from one text into the next are left out."""
    import xxhash

    arr = pa.array(texts, pa.string()) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.fill_null("")
    # NFKC folds ligatures, full-width forms and the like; ASCII texts (most of a corpus) are
    # already in that form, so only the others pay for it.
    non_ascii = pc.invert(pc.string_is_ascii(arr))
    if pc.any(non_ascii).as_py():
        import unicodedata

        other = [t if unicodedata.is_normalized("NFKC", t) else unicodedata.normalize("NFKC", t)
                 for t in arr.filter(non_ascii).to_pylist()]
        arr = pc.replace_with_mask(arr, non_ascii, pa.array(other, arr.type))
    words, owner = _words(arr)
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
    return h[valid], owner[:m][valid]


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
        # A bitmap over the hashes' top bits, ~16 bits per eval n-gram (2 bytes): nearly every
        # document n-gram misses it, so only the few that hit are searched in the sorted array.
        bits = int(min(32, max(16, np.ceil(np.log2(max(len(self.hashes), 1) * 16)))))
        self.shift = np.uint64(64 - bits)
        self.bitmap = np.zeros(1 << (bits - 3), np.uint8)
        top = self.hashes >> self.shift
        np.bitwise_or.at(self.bitmap, top >> np.uint64(3), (np.uint8(1) << (top & np.uint64(7)).astype(np.uint8)))

    @property
    def nbytes(self) -> int:
        return self.hashes.nbytes + self.items.nbytes + self.bitmap.nbytes

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(query positions, items) for every (query n-gram, eval item) pair that matches."""
        if not len(self.hashes) or not len(hashes):
            return np.empty(0, np.int64), np.empty(0, np.int32)
        top = hashes >> self.shift
        maybe = (self.bitmap[top >> np.uint64(3)] >> (top & np.uint64(7)).astype(np.uint8)) & 1
        q = np.flatnonzero(maybe)
        lo = np.searchsorted(self.hashes, hashes[q], side="left")
        reps = np.searchsorted(self.hashes, hashes[q], side="right") - lo
        hit = np.flatnonzero(reps)
        if not len(hit):
            return np.empty(0, np.int64), np.empty(0, np.int32)
        q, lo, reps = q[hit], lo[hit], reps[hit]
        total = int(reps.sum())
        first = np.repeat(lo - np.r_[0, np.cumsum(reps)[:-1]], reps)
        return np.repeat(q, reps), self.items[first + np.arange(total)]


def _distinct_counts(a: np.ndarray, b: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows (a, b) and how many distinct `h` each pair has."""
    if not len(a):
        return np.empty((0, 2), np.int64), np.empty(0, np.int64)
    key = a * (int(b.max()) + 1) + b  # one sort key for the pair: a two-key sort, not three
    order = np.lexsort((h, key))
    key, h = key[order], h[order]
    new = np.r_[True, (key[1:] != key[:-1]) | (h[1:] != h[:-1])]
    key = key[new]
    pair_start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[pair_start, len(key)])
    pairs = key[pair_start]
    width = int(b.max()) + 1
    return np.stack([pairs // width, pairs % width], axis=1), counts


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
        docs, sets = doc_of[qpos], index.item_set[items].astype(np.int64)
        # distinct n-grams per (document, set), and per (document, item) for the listing
        d_s, n_s = _distinct_counts(docs, sets, hashes[qpos])
        hit_sets: dict[int, list[int]] = {}
        for (d, s), k in zip(d_s.tolist(), n_s.tolist()):
            if k >= cfg.min_ngrams:
                hit_sets.setdefault(d, []).append(s)
        d_i, n_i = _distinct_counts(docs, items.astype(np.int64), hashes[qpos])
        per_item = dict(zip(map(tuple, d_i.tolist()), n_i.tolist()))
        ids = table.column("id").to_pylist()
        counters: dict[str, Any] = {"ngrams_checked": len(hashes), "matches_not_listed": 0}
        listed: dict[str, int] = {}
        for (d, it), k in sorted(per_item.items()):
            s = int(index.item_set[it])
            if s not in hit_sets.get(d, []):
                continue
            if len(listed) < cfg.max_listed_matches:
                listed[json.dumps([index.set_names[s], index.item_keys[it], ids[d]])] = k
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
