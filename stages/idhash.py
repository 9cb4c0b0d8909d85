"""One 64-bit hash of salted document ids, for choices that must depend on the id alone.

The sample stage's draw (stages/filter/sample.py) and the held-out evaluation documents
(stages/heldout/holdout.py) both need a key per document that is uniform, fixed by the id, and the same on
every rerun, machine, worker count and shard layout. Each passes its own salt, so the two choices
are independent of each other (a sampled-out document is no likelier to be held out).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def salted_keys(ids: Iterable[str], salt: str) -> np.ndarray:
    """xxh3-64 of `salt + id` per id, as uint64 (not cryptographic: uniform, and the same value on
    every platform and xxhash version)."""
    import xxhash

    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(salt + i) for i in ids), dtype=np.uint64)


def unit_draw(ids: Iterable[str], salt: str) -> np.ndarray:
    """u in [0, 1) per id: the top 53 bits of `salted_keys` (all a float64 holds exactly)."""
    return (salted_keys(ids, salt) >> np.uint64(11)).astype(np.float64) / float(1 << 53)
