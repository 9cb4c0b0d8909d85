"""JSON objects, one per line, read with errors that name the file and line.

Small hand-written sets (evaluation text, QA items) are read this way; corpus input goes through
stages/inputs/readers.py, which quarantines bad records instead of refusing the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator


def json_objects(path: str | Path, what: str) -> Iterator[tuple[int, dict]]:
    """(1-based line, object) for each non-blank line; ValueError naming `path:line` for a line that
    is not a JSON object, and for a file with none (`what` names the items in that message)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    found = False
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(d, dict):
                raise ValueError(f"{path}:{n}: a line of {what} is a JSON object")
            found = True
            yield n, d
    if not found:
        raise ValueError(f"{path}: no {what}")
