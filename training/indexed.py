"""Reader for the packer's training rows (docs/internals.md, "Token shards").

`PackedRows` reads the packed rows (`rows.bin`, `segs.bin`, `meta.json`) that the trainer samples
from. Token data is memory-mapped, never loaded up front, so groups larger than RAM work. The
trainer never reads the per-document `tokens.bin`/`.idx` (Megatron's format, for Megatron and NeMo
users); `stages/tokens/megatron.py` writes and reads those.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

DTYPE_NAMES = {"uint16": np.uint16, "int32": np.int32, "uint32": np.uint32, "int64": np.int64}


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
        if self.n_rows == 0:
            # A group no document fell into has meta.json only: nothing to map (and an empty
            # file could not be mapped anyway).
            return np.zeros((0, width), dtype=dtype)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing")
        expect = self.n_rows * width * np.dtype(dtype).itemsize
        if path.stat().st_size != expect:
            raise ValueError(f"{path} has {path.stat().st_size} bytes; meta.json implies {self.n_rows} x {width} x "
                             f"{np.dtype(dtype).itemsize} = {expect}")
        return np.memmap(path, dtype=dtype, mode="r", shape=(self.n_rows, width))

    def get(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, segs) for the given row indices, as int64 / int32 arrays (fancy-indexed copies)."""
        idx = np.asarray(indices, dtype=np.int64)
        toks = np.asarray(self.rows[idx], dtype=np.int64)
        if self.segs is None:
            # No boundaries stored: every position is one segment (plain causal, all targets count).
            return toks, np.ones(toks.shape, dtype=np.int32)
        return toks, np.asarray(self.segs[idx], dtype=np.int32)
