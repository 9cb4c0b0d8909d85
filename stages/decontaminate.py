"""Stage `decontaminate`: drop, cut or flag documents that share word n-grams with evaluation sets.

The method is GPT-3's (Brown et al. 2020, https://arxiv.org/abs/2005.14165, appendix C):
- **N per set.** Each set's N is the 5th percentile of its items' lengths in words, at least 8
  and at most 13 (`gpt3_n`), unless the config gives `n`. GPT-3 used that N for its overlap
  analysis and filtered the training data with 13-grams; here it filters too, so an item shorter
  than 13 words can still be found. An item's length is the words of its longest string, since
  n-grams never straddle two fields (question, answer, choices); GPT-3 measured whole examples.
- **Frequent n-grams ignored.** An eval n-gram found in more than `max_doc_frequency` documents
  (10, GPT-3's figure) is ignored: GPT-3 found such 13-grams to be "common cultural phrases, legal
  boilerplate, or similar content". The count is over the stage's input, so the stage is global:
  a first pass matches every shard (`scan`) and a second decides them (`apply`). Ignored n-grams
  are reported with the number of documents holding them.
- **What a match does** (`mode`). `span` is GPT-3's filter: the matched n-gram and 200
  characters each side are cut out, pieces under 200 characters go too, and a document split
  into more than 10 pieces is dropped. GPT-3 kept the pieces as separate documents; a stage keeps
  one row per document, so here the pieces stay one document, joined by a blank line. `drop`
  (the default) rejects the whole document, as GPT-3 first did and lm-eval-harness's
  decontamination does: safest for an evaluation, at the price of long documents lost to one
  quote. `flag` keeps everything and lists the sets.
Llama 2 (Touvron et al. 2023, appendix A.6) and Dolma/OLMo (Soldaini et al. 2024) measure or
remove contamination otherwise (token-level overlap with a skip-gram budget; paragraph Bloom
filters); neither is built here.

Both sides are normalised the same way (`word_ngrams`): NFKC, lower case, words = runs of
Unicode letters and digits, then every window of N consecutive words hashed to a 64-bit integer.
An evaluation item is one record of a set; every string in it (question, answer, choices, ...)
gives its own n-grams. A text of fewer than N words has no n-gram: an item made only of such
texts cannot be found (`EvalIndex.items_without_ngrams` counts them per set, and the report
shows them).

The eval-side index (`EvalIndex`) is built once per worker from the set files: one sorted uint64
array of n-gram hashes and, beside it, the int32 number of the item each comes from (12 bytes per
(n-gram, item) pair), plus a bitmap over the hashes' top bits (2-4 bytes per n-gram): 14-16 MB
per million eval n-grams. Document n-grams are tested against the bitmap, and the few that pass
are looked up with `searchsorted`.

The first pass saves each shard's matches under `<stage>/_work/` (keyed by the shard's digest and
the sets), so a rerun or a resumed run matches only new shards; a shard's marker records the
ignored n-grams it holds, so a change in what is frequent redoes exactly the shards it touches.
The stats (`curate stats`, `pipeline/reporting/breadth_summary.py`) list per set its N, the items
matched, with the documents, and the frequent n-grams ignored.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.base import GlobalContext, StageOutput, add_columns, split_by_reason
from curate.stages.docshard import TEXT, base_ref, document_schema, iter_docs, read_docs, write_delta
from curate.stages.shardio import (atomic_write_bytes, damage, file_digest, marker_matches, read_marker,
                                   stable_hash, write_marker, write_parquet)

MATCHES = "decontaminate_matches"
IGNORED = "decontaminate_ignored"
SETS = "decontaminate_sets"
COLUMN = "contaminated_sets"
_EVAL_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonl.gz", ".json.gz", ".parquet")
MIN_N, MAX_N = 8, 13  # GPT-3's bounds on N
SCAN_VERSION = 1  # of the saved matches; raised when what they hold changes
BATCH_ROWS = 4096  # documents hashed at once (the runner's batch for map stages)


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


def _normalised(texts: pa.Array | pa.ChunkedArray | list[str]) -> pa.Array:
    arr = pa.array(texts, pa.string()) if not isinstance(texts, (pa.Array, pa.ChunkedArray)) else texts
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.fill_null("")
    # NFKC folds ligatures, full-width forms and the like; ASCII texts (most of a corpus) are
    # already in that form, so only the others pay for it.
    non_ascii = pc.invert(pc.string_is_ascii(arr))
    if pc.any(non_ascii).as_py():
        other = [t if unicodedata.is_normalized("NFKC", t) else unicodedata.normalize("NFKC", t)
                 for t in arr.filter(non_ascii).to_pylist()]
        arr = pc.replace_with_mask(arr, non_ascii, pa.array(other, arr.type))
    return arr


def hashed_words(texts: pa.Array | pa.ChunkedArray | list[str]) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """(word hashes, text index of each word, the words) of the normalised `texts`. Words are
    hashed once per distinct word (xxh64 of the dictionary-encoded batch)."""
    import xxhash

    words, owner = _words(_normalised(texts))
    if not len(words):
        return np.empty(0, np.uint64), owner, words
    enc = pc.dictionary_encode(words)
    uniq = np.fromiter((xxhash.xxh64_intdigest(w) for w in enc.dictionary.to_pylist()), np.uint64,
                       count=len(enc.dictionary))
    return uniq[enc.indices.to_numpy()], owner, words


def windows(w: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(hashes, text index, first word) of every window of `n` words: sum_j word[i+j] * odd_j
    with wrapping uint64 arithmetic (the word hashes are already uniform, so the sum needs no
    finaliser), vectorised; windows that would cross from one text into the next are left out."""
    if len(w) < n:
        return np.empty(0, np.uint64), np.empty(0, np.int64), np.empty(0, np.int64)
    m = len(w) - n + 1
    h = np.zeros(m, np.uint64)
    with np.errstate(over="ignore"):
        for j, mult in enumerate(_odd_multipliers(n)):
            h += w[j:j + m] * mult
    valid = owner[:m] == owner[n - 1:]
    return h[valid], owner[:m][valid], np.flatnonzero(valid)


def word_ngrams(texts: pa.Array | list[str], n: int) -> tuple[np.ndarray, np.ndarray]:
    """(hashes, text index) of every n-gram of normalised words in `texts`, in text order."""
    w, owner, _ = hashed_words(texts)
    h, o, _ = windows(w, owner, n)
    return h, o


def gpt3_n(lengths: Sequence[int]) -> int:
    """GPT-3's N for one evaluation set (Brown et al. 2020, appendix C): the 5th percentile of its
    items' lengths in words, at least 8 ("spurious collisions at lower values") and at most 13."""
    if not len(lengths):
        return MAX_N
    return int(min(MAX_N, max(MIN_N, np.percentile(np.asarray(lengths), 5, method="lower"))))


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


# ------------------------------------------------------------------------------------ the stage
@dataclass
class DecontaminateConfig:
    """Config of the `decontaminate` stage."""

    sets: list[EvalSetSpec] = field(default_factory=list)
    """Evaluation sets, each `{name, path, fields, n}` (see EvalSetSpec)."""
    n: int | None = None
    """Words per n-gram for every set without its own `n`; null: GPT-3's rule per set, the 5th
    percentile of its items' lengths in words, clamped to [8, 13] (`gpt3_n`)."""
    mode: Literal["drop", "span", "flag"] = "drop"
    """`drop`: reject matching documents with reason `contaminated:<set>` (the first set, in
    config order, that matched); `span`: cut the matched n-grams out with `margin_chars` around
    them (GPT-3), dropping a document left empty or split into more than `max_splits` pieces;
    `flag`: keep them and list the sets in `contaminated_sets`."""
    max_doc_frequency: float | None = 10
    """An eval n-gram found in more than this many documents of the stage's input is ignored and
    reported (licence lines, standard headers; GPT-3 ignored 13-grams in more than 10 training
    documents); below 1: a fraction of the documents; null: none ignored."""
    min_ngrams: int = 1
    """A document matches a set when it shares at least this many distinct n-grams with it."""
    margin_chars: int = 200
    """`span` mode: characters removed each side of a matched n-gram (GPT-3: 200)."""
    min_piece_chars: int = 200
    """`span` mode: pieces left between cuts shorter than this are removed too (GPT-3: 200)."""
    max_splits: int = 10
    """`span` mode: a document cut into more pieces than this is dropped (GPT-3: 10)."""
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
        if self.n is not None and self.n < 1:
            raise ValueError(f"n: words per n-gram must be >= 1 or null, got {self.n}")
        if self.mode not in ("drop", "span", "flag"):
            raise ValueError(f"mode: {self.mode!r}; valid: drop, span, flag")
        if self.max_doc_frequency is not None and not self.max_doc_frequency > 0:
            raise ValueError(f"max_doc_frequency: a count of documents (>= 1), a fraction (< 1) or null, "
                             f"got {self.max_doc_frequency}")
        for name in ("min_ngrams", "max_splits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("margin_chars", "min_piece_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        try:
            self.sets_stamp = stable_hash([[str(f), file_digest(f)] for s in self.sets for f in s.files()])
        except FileNotFoundError:
            self.sets_stamp = None  # checked again, with the error, when the stage starts

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [COLUMN] if self.mode in ("flag", "span") else []

    def frequency_limit(self, documents: int) -> float:
        """Documents an eval n-gram may be in before it is ignored."""
        f = self.max_doc_frequency
        return float("inf") if f is None else f * documents if f < 1 else f

    def scan_key(self) -> str:
        """What a shard's matches depend on besides the shard: the sets, their N and contents."""
        return stable_hash({"sets": [vars(s) for s in self.sets], "n": self.n, "stamp": self.sets_stamp,
                            "version": SCAN_VERSION})


def _matched_sets(index: EvalIndex, hits: Hits, min_ngrams: int) -> dict[int, list[int]]:
    """Per document row, the sets it shares at least `min_ngrams` distinct n-grams with."""
    d_s, n_s = _distinct_counts(hits.doc, index.item_set[hits.item].astype(np.int64), hits.hash)
    found: dict[int, list[int]] = {}
    for (d, s), k in zip(d_s.tolist(), n_s.tolist()):
        if k >= min_ngrams:
            found.setdefault(d, []).append(s)
    return found


def _counters(index: EvalIndex, hits: Hits, found: dict[int, list[int]], ids: list[str],
              ignored: dict[int, list[tuple[str, str]]], max_listed: int) -> dict[str, Any]:
    """The stats of one batch: matches listed per (set, item, document), documents per set, the
    ignored n-grams with the documents of the batch holding them, and each set's N."""
    counters: dict[str, Any] = {"ngrams_checked": hits.checked, "matches_not_listed": 0}
    listed: dict[str, int] = {}
    d_i, n_i = _distinct_counts(hits.doc, hits.item.astype(np.int64), hits.hash)
    for (d, it), k in zip(d_i.tolist(), n_i.tolist()):
        s = int(index.item_set[it])
        if s not in found.get(d, []):
            continue
        if len(listed) < max_listed:
            listed[json.dumps([index.set_names[s], index.item_keys[it], ids[d]])] = k
        else:
            counters["matches_not_listed"] += 1
    counters[MATCHES] = listed
    counters.update({f"contaminated:{s}": 0 for s in index.set_names})  # every set shows in the stats
    for sets in found.values():
        for s in sets:
            counters[f"contaminated:{index.set_names[s]}"] += 1
    counters[SETS] = {json.dumps([s, index.n_of_set[s], index.items_total[s], index.items_without_ngrams[s]]): 1
                      for s in index.set_names}
    return counters


def _ignored_counter(hits: Hits, ignored: dict[int, list[tuple[str, str]]]) -> dict[str, int]:
    """JSON [set, n-gram words] -> documents of the batch holding that ignored n-gram."""
    freq_h, freq_docs = hits.doc_frequency()
    return {json.dumps(label): int(k) for h, k in zip(freq_h.tolist(), freq_docs.tolist())
            for label in ignored.get(h, [])}


def decontaminate(index: EvalIndex, cfg: DecontaminateConfig, stage: str, table: pa.Table, hits: Hits,
                  ignored: dict[int, list[tuple[str, str]]]) -> StageOutput:
    """Apply `cfg.mode` to `table` (rows numbered as `hits.doc`), given its matches and the eval
    n-grams to ignore (hash -> (set, words), from the corpus frequency). `text` is needed in
    `span` mode only."""
    skip = np.isin(hits.hash, np.fromiter(ignored, np.uint64, count=len(ignored)))
    counted = Hits(hits.doc[~skip], hits.hash[~skip], hits.item[~skip], hits.checked)
    found = _matched_sets(index, counted, cfg.min_ngrams)
    ids = table.column("id").to_pylist()
    counters = _counters(index, counted, found, ids, ignored, cfg.max_listed_matches)
    counters[IGNORED] = _ignored_counter(hits, ignored)
    names = [[index.set_names[s] for s in sorted(found.get(d, []))] for d in range(table.num_rows)]
    reasons: list[str | None] = [None] * table.num_rows
    if cfg.mode == "drop":
        reasons = [f"contaminated:{n[0]}" if n else None for n in names]
    elif cfg.mode == "span" and found:
        table, reasons = _cut_spans(index, cfg, table, found, set(ignored), counters)
    if cfg.mode in ("flag", "span"):
        table = add_columns(table, stage, {COLUMN: pa.array(names, pa.list_(pa.string()))})
    return split_by_reason(table, stage, reasons, counters)


def _cut_spans(index: EvalIndex, cfg: DecontaminateConfig, table: pa.Table, found: dict[int, list[int]],
               ignored: set[int], counters: dict[str, Any]) -> tuple[pa.Table, list[str | None]]:
    texts = table.column(TEXT).to_pylist()
    reasons: list[str | None] = [None] * table.num_rows
    counters.update({"span_documents_cut": 0, "span_chars_removed": 0, "span_documents_dropped": 0})
    for d, sets in found.items():
        spans = matched_spans(texts[d], index, ignored, set(sets))
        new = cut(texts[d], spans, cfg.margin_chars, cfg.min_piece_chars, cfg.max_splits) if spans else None
        if new is None:  # too many pieces, nothing left, or no span found again: drop it whole
            reasons[d] = f"contaminated:{index.set_names[min(sets)]}"
            counters["span_documents_dropped"] += 1
            continue
        counters["span_documents_cut"] += 1
        counters["span_chars_removed"] += len(texts[d]) - len(new)
        texts[d] = new
    i = table.schema.get_field_index(TEXT)
    new_text = pa.array(texts, table.schema.field(i).type)
    table = table.set_column(i, table.schema.field(i), new_text)
    if "n_chars" in table.column_names:
        j = table.schema.get_field_index("n_chars")
        table = table.set_column(j, table.schema.field(j), pc.cast(pc.utf8_length(new_text), pa.int64()))
    return table, reasons


def frequent(cfg: DecontaminateConfig, freq: list[tuple[np.ndarray, np.ndarray]], documents: int) -> np.ndarray:
    """Eval n-gram hashes in more documents than `cfg.max_doc_frequency` allows, given each
    shard's (hashes, documents holding them)."""
    if not freq or cfg.max_doc_frequency is None:
        return np.empty(0, np.uint64)
    h = np.concatenate([f[0] for f in freq])
    c = np.concatenate([f[1] for f in freq])
    uniq, inv = np.unique(h, return_inverse=True)
    total = np.bincount(inv, weights=c, minlength=len(uniq))
    return uniq[total > cfg.frequency_limit(documents)]


class DecontaminateStage:
    """Drops, cuts or flags documents sharing n-grams with the configured evaluation sets.

    A global stage: whether an eval n-gram is ignored depends on how many documents of the whole
    input hold it, so every shard is matched (`scan`) before any is decided (`apply`)."""

    version = 2  # 2: N per set, frequent n-grams ignored, span mode (1 dropped on any 13-gram)

    def __init__(self, config: DecontaminateConfig, name: str = "decontaminate"):
        self.config = config
        self.name = name
        self.index: EvalIndex | None = None

    def setup(self) -> None:
        self.index = EvalIndex(self.config.sets, self.config.n)

    def process(self, table: pa.Table) -> StageOutput:
        """Decontaminate one in-memory table on its own: n-gram frequencies are counted in it."""
        if self.index is None:
            self.setup()
        hits = Hits.find(self.index, table.column(TEXT))
        h, docs = hits.doc_frequency()
        ignored = frequent(self.config, [(h, docs)], table.num_rows)
        return decontaminate(self.index, self.config, self.name, table, hits, self.index.describe(ignored))

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg, inputs = self.config, [Path(p) for p in inputs]
        key, work = cfg.scan_key(), Path(ctx.work_dir)
        digests = [file_digest(p) for p in inputs]
        scans = [ScanTask(str(p), str(work / f"{p.stem}.npz"), stable_hash([d, key])) for p, d in zip(inputs, digests)]
        todo = [t for t in scans if _read_scan(t) is None]
        size = lambda t: os.path.getsize(t.path)  # noqa: E731
        if todo:
            ctx.executor.map_actors(_Worker(cfg, self.name), "scan", todo, desc=f"{self.name}: match",
                                    cost=size, size=size)
        found = [_read_scan(t) for t in scans]
        if any(f is None for f in found):
            raise RuntimeError(f"stage {self.name}: a shard's matches were not written ({work})")
        ignored = frequent(cfg, [(f["freq_hash"], f["freq_docs"]) for f in found], sum(int(f["docs"]) for f in found))
        labels = EvalIndex(cfg.sets, cfg.n).describe(ignored) if len(ignored) else {}
        tasks = []
        stage_dir = Path(ctx.stage_dir)
        for p, d, scan, f in zip(inputs, digests, scans, found):
            mine = np.intersect1d(ignored, f["freq_hash"])
            fp = stable_hash([d, key, mine.tolist(), self.version])
            marker = read_marker(stage_dir, p.stem)
            if not (marker_matches(marker, fp, ctx.config_hash) and damage(stage_dir, marker) is None):
                tasks.append(ApplyTask(scan, str(stage_dir), str(ctx.rejected_dir), {h: labels[h] for h in
                                       mine.tolist()}, d, fp, ctx.config_hash))
        stage_dir.mkdir(parents=True, exist_ok=True)
        Path(ctx.rejected_dir).mkdir(parents=True, exist_ok=True)
        if tasks:
            ctx.executor.map_actors(_Worker(cfg, self.name), "apply", tasks, desc=f"{self.name}: apply",
                                    cost=lambda t: size(t.scan), size=lambda t: size(t.scan))


# ------------------------------------------------------------------- the two passes of a run
@dataclass(frozen=True)
class ScanTask:
    path: str
    """The input shard."""
    out: str
    """Its matches: an .npz under the stage's work folder."""
    key: str
    """The shard's digest and the config's `scan_key`: a file of another key is stale."""


@dataclass(frozen=True)
class ApplyTask:
    scan: ScanTask
    stage_dir: str
    rejected_dir: str
    ignored: dict
    """Ignored n-grams found in this shard: hash -> [(set, words)]."""
    digest: str
    """The input shard's content digest."""
    fingerprint: str
    config_hash: str


def _read_scan(task: ScanTask) -> dict | None:
    try:
        with np.load(task.out) as f:
            return dict(f) if str(f["key"]) == task.key else None
    except (OSError, KeyError, ValueError, EOFError):  # absent, or cut short by a killed run
        return None


class _Worker:
    """Built once per worker (`make()` of `Executor.map_actors`): the eval index loads once."""

    def __init__(self, config: DecontaminateConfig, name: str):
        self.config, self.name = config, name
        self.stage: DecontaminateStage | None = None

    def __call__(self) -> "_Worker":
        self.stage = DecontaminateStage(self.config, self.name)
        self.stage.setup()
        return self

    def scan(self, task: ScanTask) -> None:
        """Match one shard and save its matches and n-gram document counts."""
        parts, rows = [], 0
        for table in iter_docs(task.path, BATCH_ROWS, columns=[TEXT]):
            parts.append(Hits.find(self.stage.index, table.column(TEXT), rows))
            rows += table.num_rows
        hits = Hits.of([p.doc for p in parts], [p.hash for p in parts], [p.item for p in parts],
                       sum(p.checked for p in parts))
        freq_hash, freq_docs = hits.doc_frequency()
        buf = io.BytesIO()
        np.savez(buf, key=np.array(task.key), docs=np.int64(rows), checked=np.int64(hits.checked), doc=hits.doc,
                 hash=hits.hash, item=hits.item, freq_hash=freq_hash, freq_docs=freq_docs)
        atomic_write_bytes(Path(task.out), buf.getvalue())

    def apply(self, task: ApplyTask) -> dict:
        """Decide one shard from its saved matches; write its kept documents (a delta shard, or a
        full one in `span` mode, whose text changed), rejected rows and marker."""
        t0, cfg, path = time.time(), self.config, Path(task.scan.path)
        f = _read_scan(task.scan)
        if f is None:
            raise RuntimeError(f"stage {self.name}: the matches of {path.name} ({task.scan.out}) are gone or stale")
        hits = Hits(f["doc"], f["hash"], f["item"], int(f["checked"]))
        schema = document_schema(path)
        span = cfg.mode == "span"
        docs = read_docs(path) if span else read_docs(path, [c for c in schema.names if c != TEXT], with_row=True)
        out = decontaminate(self.stage.index, cfg, self.name, docs, hits, task.ignored)
        stage_dir, rejected = Path(task.stage_dir), Path(task.rejected_dir) / f"{path.stem}.parquet"
        target = stage_dir / f"{path.stem}.parquet"
        written = (write_parquet(target, out.kept) if span
                   else write_delta(target, base_ref(path, task.digest), schema, out.kept))
        write_parquet(rejected, out.rejected)
        reasons: dict[str, int] = {}
        for r in out.rejected.column("reason").to_pylist():
            reasons[r] = reasons.get(r, 0) + 1
        counts = {"in": docs.num_rows, "kept": out.kept.num_rows, "rejected": out.rejected.num_rows,
                  "quarantined": 0, "rejected_by_reason": reasons, "quarantined_by_reason": {}, **out.counters}
        marker = {"stage": self.name, "input_fingerprint": task.fingerprint, "config_hash": task.config_hash,
                  "outputs": [target.name], "counts": counts, "bytes_in": path.stat().st_size,
                  "bytes_out": written, "seconds": round(time.time() - t0, 3), "input": str(path)}
        return write_marker(stage_dir, path.stem, marker, also=[rejected])
