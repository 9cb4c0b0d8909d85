"""Words and word n-grams as the `decontaminate` stage counts them: NFKC-folded, lower-cased runs
of letters and digits, hashed into 64-bit n-gram keys with numpy (no Python loop per word).
`word_ngrams` is also what the recipe miniature's leak check intersects (bench/miniature/leaks.py);
`gpt3_n` is GPT-3's rule for N per evaluation set (Brown et al. 2020, appendix C)."""

from __future__ import annotations

import unicodedata
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MIN_N, MAX_N = 8, 13  # GPT-3's bounds on N


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


