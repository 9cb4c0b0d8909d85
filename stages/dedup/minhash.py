"""MinHash signatures, vectorized with numpy.

The permutations are datasketch's (>= 2.0) default "affine32" scheme, generated the same way from
the same seed: a shingle's 32-bit hash `h` is pre-mixed with the MurmurHash3 finalizer, then
permutation k is `a_k * fmix32(h) + b_k mod 2^32` (a_k odd, so a bijection) and a document's
signature is the minimum over its shingles (Broder 1997, "On the resemblance and containment of
documents"). With `hash="sha1"` a shingle's hash is datasketch's `sha1_hash32`, so signatures
equal `datasketch.MinHash(num_perm, seed).update_batch(shingles)` exactly (tested). `hash="xxh"`
hashes each distinct word once (xxh64) and combines the n word hashes of a shingle arithmetically,
which is several times faster; the permutation step is the same.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass

import numpy as np

from curate.stages.dedup.common import fmix64, normalize_text

EMPTY = np.uint32(0xFFFFFFFF)  # datasketch's value for a signature of no shingles
_CHUNK = 2048  # shingles per permutation block: 2048 x 128 x 4 B = 1 MB, stays in cache


@dataclass(frozen=True)
class ShingleSpec:
    """How a document becomes shingles (all fields are documented on `MinHashDedupConfig`)."""

    kind: str = "word"
    ngram: int = 5
    hash: str = "xxh"
    lowercase: bool = True
    punctuation: bool = True
    nfkc: bool = False


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of datasketch's affine32 scheme, drawn exactly as `MinHash._init_permutations`."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint32, copy=True)
    with np.errstate(over="ignore"):
        h ^= h >> np.uint32(16)
        h *= np.uint32(0x85EBCA6B)
        h ^= h >> np.uint32(13)
        h *= np.uint32(0xC2B2AE35)
        h ^= h >> np.uint32(16)
    return h


def tokens(text: str, spec: ShingleSpec) -> list[str]:
    """Words of the normalized text (`kind="word"`), or its characters (`kind="char"`)."""
    norm = normalize_text(text, spec.lowercase, spec.punctuation, spec.kind == "char", spec.nfkc)
    return norm.split() if spec.kind == "word" else list(norm)


def shingles(text: str, spec: ShingleSpec) -> list[str]:
    """The shingles of one document, repeats included (a text shorter than n is one shingle)."""
    toks = tokens(text, spec)
    if not toks:
        return []
    sep = " " if spec.kind == "word" else ""
    n = spec.ngram
    return [sep.join(toks[i : i + n]) for i in range(max(1, len(toks) - n + 1))]


def _sha1_hashes(texts: list[str], spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
    counts = np.zeros(len(texts), np.int64)
    digests = []
    sha1 = hashlib.sha1
    for i, t in enumerate(texts):
        sh = shingles(t, spec)
        counts[i] = len(sh)
        digests.extend([sha1(s.encode("utf-8")).digest()[:4] for s in sh])
    return np.frombuffer(b"".join(digests), dtype="<u4").astype(np.uint32), counts


_PRIME_A = np.uint64(0x9E3779B97F4A7C15)
_PRIME_B = np.uint64(0xBF58476D1CE4E5B9)


def _token_hashes(toks: list[list[str]], spec: ShingleSpec) -> np.ndarray:
    """64-bit hash of every token of the batch, concatenated."""
    if spec.kind == "char":
        # A character's code point is its identity: mix it, no string hashing needed.
        cps = np.frombuffer("".join("".join(t) for t in toks).encode("utf-32-le"), dtype="<u4")
        return fmix64(cps.astype(np.uint64) + _PRIME_A)
    import pyarrow as pa
    import pyarrow.compute as pc
    import xxhash

    # Each distinct word of the batch is hashed once (Zipf: few distinct words), found with
    # Arrow's C++ dictionary encoding instead of a Python dict lookup per word.
    enc = pc.dictionary_encode(pa.array(list(itertools.chain.from_iterable(toks)), pa.string()))
    words = enc.dictionary.to_pylist()
    table = np.fromiter(map(xxhash.xxh64_intdigest, words), np.uint64, len(words))
    return table[enc.indices.to_numpy()]


def _xxh_hashes(texts: list[str], spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
    toks = [tokens(t, spec) for t in texts]
    n = spec.ngram
    lens = np.fromiter(map(len, toks), np.int64, len(toks))
    counts = np.where(lens >= n, lens - n + 1, np.minimum(lens, 1))
    wh = _token_hashes(toks, spec)
    n_tok = len(wh)
    wh = np.r_[wh, np.zeros(n, np.uint64)]
    with np.errstate(over="ignore"):
        # Order-sensitive combination of n consecutive token hashes (a polynomial in _PRIME_B),
        # over contiguous slices of the whole batch; collisions ~ 2^-64.
        acc = wh[:n_tok].copy()
        for j in range(1, n):
            acc *= _PRIME_B
            acc += wh[j : n_tok + j] ^ _PRIME_A
        # Keep the windows that lie inside one document: doc d's start at token starts[d] + s.
        total = int(counts.sum())
        first = np.repeat(np.cumsum(counts) - counts, counts)
        starts = np.cumsum(lens) - lens
        pos = np.repeat(starts, counts) + (np.arange(total) - first)
        acc = acc[pos] if total else np.zeros(0, np.uint64)
        # A document shorter than n is one shingle of all its tokens.
        ends = np.cumsum(counts)
        for d in np.flatnonzero((lens > 0) & (lens < n)):
            s0, k = int(starts[d]), int(lens[d])
            v = wh[s0]
            for j in range(1, k):
                v = v * _PRIME_B + (wh[s0 + j] ^ _PRIME_A)
            acc[ends[d] - 1] = v
    h = fmix64(acc)
    return (h ^ (h >> np.uint64(32))).astype(np.uint32), counts


def shingle_hashes(texts: list[str], spec: ShingleSpec) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every document's shingles, concatenated, and the count per document."""
    if spec.hash == "sha1":
        return _sha1_hashes(texts, spec)
    return _xxh_hashes(texts, spec)


def signatures_from_hashes(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(n_docs, num_perm) uint32: per document, min over its shingles of a*fmix32(h)+b mod 2^32."""
    n_docs, num_perm = len(counts), len(a)
    sig = np.full((n_docs, num_perm), EMPTY, np.uint32)
    if len(hashes) == 0:
        return sig
    hv = fmix32(hashes)[:, None]
    ends = np.cumsum(counts)
    buf = np.empty((_CHUNK, num_perm), np.uint32)
    with np.errstate(over="ignore"):
        for lo in range(0, len(hashes), _CHUNK):
            hi = min(lo + _CHUNK, len(hashes))
            blk = buf[: hi - lo]
            np.multiply(hv[lo:hi], a, out=blk)
            np.add(blk, b, out=blk)
            # Documents overlapping [lo, hi); one may continue from the previous block.
            first = int(np.searchsorted(ends, lo, side="right"))
            last = int(np.searchsorted(ends, hi, side="left"))
            for d in range(first, last + 1):
                s, e = max(int(ends[d] - counts[d]), lo) - lo, min(int(ends[d]), hi) - lo
                if e > s:
                    # A per-document min over rows beats np.minimum.reduceat(axis=0) ~2x here.
                    np.minimum(sig[d], blk[s:e].min(axis=0), out=sig[d])
    return sig


def signatures(texts: list[str], spec: ShingleSpec, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signatures of `texts` and the number of shingles of each (0: empty document)."""
    hashes, counts = shingle_hashes(texts, spec)
    return signatures_from_hashes(hashes, counts, a, b), counts


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n_docs, bands) uint64 bucket keys: a 64-bit hash of each band's `rows` values and its index.

    Two documents share a key in band i iff (up to 2^-64 collisions) their signatures agree on
    all rows of band i: the banding of Indyk & Motwani / Leskovec et al., MMDS ch. 3.4.
    """
    n = sig.shape[0]
    keys = np.empty((n, bands), np.uint64)
    s64 = sig.astype(np.uint64)
    with np.errstate(over="ignore"):
        for i in range(bands):
            acc = np.full(n, np.uint64(i + 1) * _PRIME_A, np.uint64)
            for j in range(i * rows, (i + 1) * rows):
                acc = fmix64(acc ^ s64[:, j])
            keys[:, i] = fmix64(acc)
    return keys


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions, row by row (an unbiased Jaccard estimate)."""
    return (sig_a == sig_b).mean(axis=1)
