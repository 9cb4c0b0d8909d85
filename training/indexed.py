"""Readers for the packer's token files (docs/internals.md, "Token shards"), all through memory maps.

`IndexedDataset` reads Megatron-LM's `MMIDIDX` format (`tokens.bin` + `tokens.idx`, one sequence per
document); `PackedRows` reads the packed training rows (`rows.bin`, `segs.bin`, `meta.json`) that the
trainer samples from. Nothing is loaded into memory up front, so groups larger than RAM work.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
# Megatron-LM `DType` codes (megatron/core/datasets/indexed_dataset.py).
DTYPE_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16}
DTYPE_NAMES = {"uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64}


class IndexedDataset:
    """A Megatron `MMIDIDX` dataset: `len(ds)` sequences, `ds[i]` a numpy view of sequence i."""

    def __init__(self, prefix: Path) -> None:
        prefix = Path(prefix)
        self.idx_path, self.bin_path = prefix.with_suffix(".idx"), prefix.with_suffix(".bin")
        with open(self.idx_path, "rb") as f:
            head = f.read(len(MAGIC) + 8 + 1 + 8 + 8)
        if head[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{self.idx_path} is not a Megatron MMIDIDX index (bad magic)")
        version, code, n_seq, n_doc = struct.unpack("<QBQQ", head[len(MAGIC):])
        if version != 1:
            raise ValueError(f"{self.idx_path}: index version {version} is not supported (valid: 1)")
        if code not in DTYPE_CODES:
            raise ValueError(f"{self.idx_path}: dtype code {code} is unknown (valid: {sorted(DTYPE_CODES)})")
        self.dtype = np.dtype(DTYPE_CODES[code])
        idx = np.memmap(self.idx_path, dtype=np.uint8, mode="r")
        off = len(head)
        self.lengths = np.frombuffer(idx, dtype=np.int32, count=n_seq, offset=off)
        off += 4 * n_seq
        self.pointers = np.frombuffer(idx, dtype=np.int64, count=n_seq, offset=off)
        off += 8 * n_seq
        self.doc_idx = np.frombuffer(idx, dtype=np.int64, count=n_doc, offset=off)
        self.data = np.memmap(self.bin_path, dtype=self.dtype, mode="r")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.pointers[i]) // self.dtype.itemsize
        return self.data[start : start + int(self.lengths[i])]

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


class PackedRows:
    """One group's packed rows: `rows[i]` has seq_len + 1 token ids, `segs[i]` their segment numbers."""

    def __init__(self, group_dir: Path) -> None:
        self.dir = Path(group_dir)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.dir}: meta.json is missing (was `curate pack` run?)")
        self.meta = json.loads(meta_path.read_text())
        try:
            self.seq_len = int(self.meta["seq_len"])
            self.n_rows = int(self.meta["n_rows"])
            self.dtype = np.dtype(DTYPE_NAMES[self.meta["dtype"]])
            self.vocab_size = int(self.meta["vocab_size"])
        except KeyError as e:
            raise ValueError(f"{meta_path}: missing or invalid field {e} (dtype valid: {sorted(DTYPE_NAMES)})") from None
        width = self.seq_len + 1
        self.rows = self._map("rows.bin", self.dtype, width)
        segs_path = self.dir / "segs.bin"
        self.segs = self._map("segs.bin", np.uint16, width) if segs_path.exists() else None

    def _map(self, name: str, dtype: np.dtype, width: int) -> np.ndarray:
        path = self.dir / name
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing")
        expect = self.n_rows * width * np.dtype(dtype).itemsize
        if path.stat().st_size != expect:
            raise ValueError(f"{path} has {path.stat().st_size} bytes; meta.json implies {self.n_rows} x {width} x "
                             f"{np.dtype(dtype).itemsize} = {expect}")
        if self.n_rows == 0:
            return np.zeros((0, width), dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r", shape=(self.n_rows, width))

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, segs) for the given row indices, as int64 / int32 arrays (fancy-indexed copies)."""
        idx = np.asarray(indices, dtype=np.int64)
        toks = np.asarray(self.rows[idx], dtype=np.int64)
        if self.segs is None:
            # No boundaries stored: every position is one segment (plain causal, all targets count).
            return toks, np.ones(toks.shape, dtype=np.int32)
        return toks, np.asarray(self.segs[idx], dtype=np.int32)
