"""Evaluation sets for the `decontaminate` stage: reading their items (`EvalSetSpec`,
`read_items`), the index of their n-grams (`EvalIndex`), a corpus's matches against it (`Hits`),
and cutting matched spans out of a text (`matched_spans`, `cut`: GPT-3's span removal)."""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import pyarrow as pa

from curate.stages.heldout.wordgrams import gpt3_n, hashed_words, windows

_EVAL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".parquet")


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
    n: int | None = None
    """Words per n-gram for this set; null: the stage's `n`, else GPT-3's rule (`gpt3_n`)."""

    def __post_init__(self):
        if not self.name or not self.name.replace("_", "").replace("-", "").replace(".", "").isalnum():
            raise ValueError(f"name: {self.name!r} must be letters, digits, '_', '-' or '.' (it names a reason)")
        if self.fields is not None and not self.fields:
            raise ValueError("fields: give at least one field name, or null for every string field")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n: words per n-gram must be >= 1, got {self.n}")

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


def _item_lengths(word_string: np.ndarray, string_item: np.ndarray, n_items: int) -> np.ndarray:
    """Words in each item's longest string: the longest run an n-gram can lie in, since n-grams
    never straddle two fields."""
    per_string = np.bincount(word_string, minlength=len(string_item))
    out = np.zeros(n_items, np.int64)
    np.maximum.at(out, string_item, per_string)
    return out


class EvalIndex:
    """Sorted n-gram hashes of every eval set, each hashed at its set's N, with the item it comes from."""

    def __init__(self, sets: list[EvalSetSpec], n: int | None = None):
        self.sets = list(sets)
        self.set_names = [s.name for s in sets]
        self.item_keys: list[str] = []
        self.first_item: list[int] = []
        self.n_of_set: dict[str, int] = {}
        self.items_total: dict[str, int] = {}
        self.items_without_ngrams: dict[str, int] = {}
        item_set: list[int] = []
        hashes, owners = [], []
        for k, spec in enumerate(sets):
            first = len(self.item_keys)
            self.first_item.append(first)
            strings, string_item = [], []
            for key, texts in read_items(spec):
                string_item += [len(self.item_keys) - first] * len(texts)
                self.item_keys.append(key)
                item_set.append(k)
                strings += texts
            total = self.items_total[spec.name] = len(self.item_keys) - first
            w, word_string, _ = hashed_words(strings)
            string_item = np.asarray(string_item, np.int64)
            nk = spec.n or n or gpt3_n(_item_lengths(word_string, string_item, total))
            self.n_of_set[spec.name] = nk
            h, s, _ = windows(w, word_string, nk)
            owner = string_item[s] + first
            self.items_without_ngrams[spec.name] = total - len(np.unique(owner))
            hashes.append(h)
            owners.append(owner)
        self.ns = sorted(set(self.n_of_set.values()))
        self.item_set = np.asarray(item_set, np.int16)
        self.item_n = np.asarray([self.n_of_set[self.set_names[k]] for k in item_set], np.int64)
        h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        o = np.concatenate(owners).astype(np.int32) if owners else np.empty(0, np.int32)
        order = np.lexsort((o, h))
        h, o = h[order], o[order]
        keep = np.r_[True, (h[1:] != h[:-1]) | (o[1:] != o[:-1])] if len(h) else np.empty(0, bool)
        self.hashes, self.items = h[keep], o[keep]
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

    def matches(self, w: np.ndarray, owner: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """Per N of the index: (N, query windows' hashes, positions of the matching windows, their
        items), windows of `n` words over word hashes `w` owned by texts `owner`; an item matches
        only a window of its own set's N."""
        for n in self.ns:
            h, o, start = windows(w, owner, n)
            q, items = self.lookup(h)
            same = self.item_n[items] == n
            yield n, (h, o, start), q[same], items[same]

    def describe(self, hashes: Iterable[int]) -> dict[int, list[tuple[str, str]]]:
        """(set, n-gram words) per hash, for the few n-grams a report names: the items holding
        them are read again (the index keeps hashes only)."""
        want = np.unique(np.asarray(list(hashes), np.uint64))
        lo, hi = np.searchsorted(self.hashes, want, "left"), np.searchsorted(self.hashes, want, "right")
        items = {int(i) for a, b in zip(lo, hi) for i in self.items[a:b]}
        wanted, out = set(want.tolist()), {}
        for k, spec in enumerate(self.sets):
            first, nk = self.first_item[k], self.n_of_set[spec.name]
            need = {i - first for i in items if self.item_set[i] == k}
            for j, (_, texts) in enumerate(read_items(spec) if need else ()):
                if j not in need or not texts:
                    continue
                w, owner, words = hashed_words(texts)
                h, _, start = windows(w, owner, nk)
                for hv, s in zip(h.tolist(), start.tolist()):
                    label = (spec.name, " ".join(words[s:s + nk].to_pylist()))
                    if hv in wanted and label not in out.setdefault(hv, []):
                        out[hv].append(label)
        return out


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


# ------------------------------------------------------------------------ matching a corpus
@dataclass
class Hits:
    """Every distinct (document row, eval n-gram hash, eval item) match of a batch or shard."""

    doc: np.ndarray
    hash: np.ndarray
    item: np.ndarray
    checked: int = 0
    """Document n-grams looked up."""

    @classmethod
    def find(cls, index: EvalIndex, texts: pa.Array | pa.ChunkedArray, first_row: int = 0) -> "Hits":
        w, owner, _ = hashed_words(texts)
        docs, hs, items, checked = [], [], [], 0
        for _, (h, o, _), q, it in index.matches(w, owner):
            checked += len(h)
            docs.append(o[q] + first_row)
            hs.append(h[q])
            items.append(it.astype(np.int32))
        return cls.of(docs, hs, items, checked)

    @classmethod
    def of(cls, docs: list, hashes: list, items: list, checked: int) -> "Hits":
        d = np.concatenate(docs) if docs else np.empty(0, np.int64)
        h = np.concatenate(hashes) if hashes else np.empty(0, np.uint64)
        i = np.concatenate(items) if items else np.empty(0, np.int32)
        order = np.lexsort((i, h, d))
        d, h, i = d[order], h[order], i[order]
        new = np.r_[True, (d[1:] != d[:-1]) | (h[1:] != h[:-1]) | (i[1:] != i[:-1])] if len(d) else np.empty(0, bool)
        return cls(d[new].astype(np.int64), h[new], i[new], checked)

    def doc_frequency(self) -> tuple[np.ndarray, np.ndarray]:
        """(eval n-gram hashes found, number of documents each is in)."""
        if not len(self.doc):
            return np.empty(0, np.uint64), np.empty(0, np.int64)
        pair_new = np.r_[True, (self.doc[1:] != self.doc[:-1]) | (self.hash[1:] != self.hash[:-1])]
        return np.unique(self.hash[pair_new], return_counts=True)


# ------------------------------------------------------------------------ removing spans
_WORD = re.compile(r"[^\W_]+")


def _folded(text: str) -> tuple[str, list[int] | None]:
    """`text` normalised as `word_ngrams` does (NFKC, lower case) one character at a time, and
    the index in `text` of each character of the result (None: the same index, an ASCII text)."""
    if text.isascii():
        return text.lower(), None
    parts, where = [], []
    for i, c in enumerate(text):
        t = unicodedata.normalize("NFKC", c).lower() if ord(c) > 127 else c.lower()
        parts.append(t)
        where += [i] * len(t)
    return "".join(parts), where


def matched_spans(text: str, index: EvalIndex, ignored: set[int], sets: set[int]) -> list[tuple[int, int]]:
    """(start, end) in `text` of every n-gram that matches an item of `sets` and is not ignored.

    Characters are normalised one at a time to keep a map back to the text; NFKC over a whole
    text composes a few sequences differently, and a match found that way but not this way
    leaves no span (the caller then drops the document)."""
    import xxhash

    folded, where = _folded(text)
    spans = [m.span() for m in _WORD.finditer(folded)]
    w = np.fromiter((xxhash.xxh64_intdigest(folded[a:b]) for a, b in spans), np.uint64, count=len(spans))
    out = []
    for n, (h, _, start), q, items in index.matches(w, np.zeros(len(w), np.int64)):
        for hv, s, it in zip(h[q].tolist(), start[q].tolist(), items.tolist()):
            if hv in ignored or int(index.item_set[it]) not in sets:
                continue
            a, b = spans[s][0], spans[s + n - 1][1]
            out.append((a, b) if where is None else (where[a], where[b - 1] + 1))
    return out


def cut(text: str, spans: list[tuple[int, int]], margin: int, min_piece: int, max_splits: int) -> str | None:
    """`text` without `spans` widened by `margin` characters each side, its pieces (shorter ones
    than `min_piece` left out) joined by a blank line; None when nothing is left or the cuts split
    it into more than `max_splits` pieces (GPT-3's rule, Brown et al. 2020, appendix C)."""
    pieces, pos = [], 0
    for a, b in sorted((max(0, a - margin), min(len(text), b + margin)) for a, b in spans):
        if a > pos:
            pieces.append(text[pos:a])
        pos = max(pos, b)
    if pos < len(text):
        pieces.append(text[pos:])
    if len(pieces) > max_splits:
        return None
    kept = [p.strip() for p in pieces if len(p.strip()) >= min_piece]
    return "\n\n".join(kept) if kept else None

