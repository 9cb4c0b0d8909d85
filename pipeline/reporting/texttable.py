"""Plain-text tables whose columns line up whatever their cells hold (`curate stats`, `curate query`)."""

from __future__ import annotations

from typing import Container, Sequence


def aligned(rows: Sequence[Sequence[object]], right: Container[int] = (), indent: str = "  ",
            gap: str = "  ") -> list[str]:
    """One line per row; each column as wide as its widest cell, the columns in `right` (numbers)
    aligned right. A long value widens its column instead of pushing the rest of its row along."""
    cells = [[str(c) for c in row] for row in rows]
    n_cols = max((len(r) for r in cells), default=0)
    widths = [max(len(r[i]) for r in cells if i < len(r)) for i in range(n_cols)]
    return [(indent + gap.join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(r, widths)))).rstrip() for r in cells]
