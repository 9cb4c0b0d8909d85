"""Megatron-compatible indexed datasets (`.bin` + `.idx`, the "MMIDIDX" format).

The layout follows megatron-core's `megatron/core/datasets/indexed_dataset.py` byte for byte, so
Megatron-LM, NeMo and our own trainer read the same files:

`.idx` (little endian)::

    9 bytes   magic  b"MMIDIDX\\x00\\x00"
    uint64    version = 1
    uint8     dtype code (Megatron's `DType`: 4 = int32, 8 = uint16, ...)
    uint64    sequence count  S
    uint64    document count  D  (= number of documents + 1: `document_indices` starts with 0)
    int32[S]  sequence lengths in tokens
    int64[S]  sequence pointers: byte offset of each sequence in `.bin`
    int64[D]  document indices: sequence index where each document starts, then S

`.bin` is the token ids of all sequences back to back in the dtype above. We write one sequence
per document, so `document_indices = [0, 1, ..., S]`.

Files are written under a temporary name and renamed when complete (as `stages.shardio` does for
shards), so a killed run never leaves a `.bin` that a rerun would trust.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.stages.shardio import AtomicFile

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
# Megatron's DType codes (megatron.core.datasets.indexed_dataset.DType).
DTYPE_CODES: dict[int, type] = {
    1: np.uint8,
    2: np.int8,
    3: np.int16,
    4: np.int32,
    5: np.int64,
    6: np.float64,
    7: np.float32,
    8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocabulary under 65,536), else int32 (Megatron has no uint32)."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    return np.dtype(np.uint16) if vocab_size < 65536 else np.dtype(np.int32)


def _with(prefix: Path, suffix: str) -> Path:
    # Not Path.with_suffix: a prefix such as "tokens.v2" must keep its dot.
    return Path(f"{prefix}{suffix}")


class IndexedDatasetWriter:
    """Streams documents into `<prefix>.bin` and writes `<prefix>.idx` on close.

    Use as a context manager; `add(tokens, lengths)` appends a batch of documents given as one
    flat token array and the length of each document. On an exception neither file appears.
    """

    def __init__(self, prefix: Path, dtype: np.dtype):
        self.prefix = Path(prefix)
        self.dtype = np.dtype(dtype)
        if self.dtype not in CODE_OF:
            raise ValueError(f"dtype {self.dtype} has no Megatron code; valid: {sorted(map(str, CODE_OF))}")
        self._lengths: list[np.ndarray] = []
        self._bin = AtomicFile(_with(self.prefix, ".bin"))

    def add(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        if int(lengths.sum()) != len(tokens):
            raise ValueError(f"{len(tokens)} tokens but lengths sum to {int(lengths.sum())}")
        if len(lengths) and (lengths.min() < 0 or lengths.max() > np.iinfo(np.int32).max):
            raise ValueError("document lengths must be in [0, 2**31)")
        self._bin.write(np.ascontiguousarray(tokens, dtype=self.dtype))
        self._lengths.append(lengths.astype(np.int32))

    def close(self) -> None:
        self._bin.commit()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        write_index(_with(self.prefix, ".idx"), lengths, self.dtype)

    def __enter__(self) -> "IndexedDatasetWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._bin.abort()


def write_index(path: Path, lengths: np.ndarray, dtype: np.dtype) -> None:
    """The `.idx` for one sequence per document with these lengths."""
    lengths = np.asarray(lengths, dtype=np.int32)
    n = len(lengths)
    pointers = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * np.dtype(dtype).itemsize, out=pointers[1:])
    doc_idx = np.arange(n + 1, dtype=np.int64)
    with AtomicFile(path) as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", VERSION))
        f.write(struct.pack("<B", CODE_OF[np.dtype(dtype)]))
        f.write(struct.pack("<Q", n))
        f.write(struct.pack("<Q", len(doc_idx)))
        f.write(lengths.astype("<i4").tobytes())
        f.write(pointers.astype("<i8").tobytes())
        f.write(doc_idx.astype("<i8").tobytes())


@dataclass
class IndexedDataset:
    """A read-only view of an indexed dataset: `tokens` is a memory map of the whole `.bin`."""

    dtype: np.dtype
    lengths: np.ndarray  # int32 per sequence
    pointers: np.ndarray  # int64 byte offsets
    document_indices: np.ndarray  # int64
    tokens: np.ndarray  # memmap of the .bin

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.tokens[start : start + int(self.lengths[i])]

    @property
    def offsets(self) -> np.ndarray:
        """Token offset of each sequence in `tokens`."""
        return self.pointers // self.dtype.itemsize


def read_indexed_dataset(prefix: Path) -> IndexedDataset:
    """Open `<prefix>.idx` / `<prefix>.bin`; raises ValueError on a file that is not MMIDIDX v1."""
    prefix = Path(prefix)
    idx = _with(prefix, ".idx").read_bytes()
    if idx[:9] != MAGIC:
        raise ValueError(f"{prefix}.idx: bad magic {idx[:9]!r}, expected {MAGIC!r}")
    (version,) = struct.unpack_from("<Q", idx, 9)
    if version != VERSION:
        raise ValueError(f"{prefix}.idx: version {version}, only {VERSION} is supported")
    (code,) = struct.unpack_from("<B", idx, 17)
    if code not in DTYPE_CODES:
        raise ValueError(f"{prefix}.idx: unknown dtype code {code}")
    n_seq, n_doc = struct.unpack_from("<QQ", idx, 18)
    off = 34
    lengths = np.frombuffer(idx, dtype="<i4", count=n_seq, offset=off)
    off += 4 * n_seq
    pointers = np.frombuffer(idx, dtype="<i8", count=n_seq, offset=off)
    off += 8 * n_seq
    doc_idx = np.frombuffer(idx, dtype="<i8", count=n_doc, offset=off)
    dtype = np.dtype(DTYPE_CODES[code])
    bin_path = _with(prefix, ".bin")
    if bin_path.stat().st_size == 0:
        tokens = np.zeros(0, dtype=dtype)
    else:
        tokens = np.memmap(bin_path, dtype=dtype, mode="r")
    return IndexedDataset(dtype, lengths, pointers, doc_idx, tokens)
