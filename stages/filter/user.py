"""A user's own components, named by import path in a config.

- `kind: filter` with `function: "module:name"`: the function takes one document (a dict of the
  document's columns: `id`, `text`, `source`, `url`, `date`, `n_chars`, `meta`, and every column an
  earlier stage added) and returns `True` to keep it or a reason string to drop it (`False` drops
  it with the stage's `reason`). The reason lands in `rejected/` and in `curate stats` like any
  built-in filter's.
- `kind: "module:Class"`: a stage class of the user's own, written to the map-stage contract of
  `stages/base.py` (`__init__(config, name)`, `setup()`, `process(table) -> StageOutput`; the
  smallest example is `stages/filter/word_count.py`), or a scorer class (`scorers/base.py`: `columns()`,
  `load()`, `score(texts)`), which runs through the one scoring stage. Its fields come from a
  dataclass `Class.Config` when the class has one; a class without one takes no fields.

Both run on Ray and in-process and resume like built-in stages: the marker's config hash covers
the config and a digest of the module's source file, so editing the function reruns the stage.
The module must be importable where the stage runs: on this machine through `PYTHONPATH` (Ray's
local workers inherit the driver's environment); on a cluster, shipped with the job
(`ray job submit --runtime-env-json '{"py_modules": [...]}'` or installed on every node).
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable

import pyarrow as pa
import xxhash

from curate.stages.base import StageOutput, split_by_reason


def import_object(ref: str, what: str) -> Any:
    """The object `ref` ("package.module:name") names; ValueError saying what is wrong otherwise."""
    module, sep, name = ref.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"{ref!r} is not an import path: give {what} as \"module:name\" (e.g. \"myfilters:no_tables\")")
    try:
        obj = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{ref!r}: cannot import module {module!r} ({e}); put it on PYTHONPATH "
                         f"(or install it) where curate runs") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{ref!r}: module {module!r} has no {name!r}")
        obj = getattr(obj, part)
    return obj


def source_digest(obj: Any) -> str | None:
    """A digest of the source file that defines `obj` (None where there is no file, e.g. a builtin)."""
    try:
        path = inspect.getsourcefile(obj)
        with open(path, "rb") as f:
            return xxhash.xxh3_64_hexdigest(f.read())
    except (TypeError, OSError):
        return None


@dataclass
class FilterConfig:
    """Config of the `filter` stage: a user's function decides per document."""

    function: str = ""
    """import path "module:name" of a function `f(doc: dict) -> True | str | False`"""
    reason: str = "filter"
    """drop reason when the function returns False (a returned string is the reason itself)"""
    code_digest: str | None = None
    """filled in from the function's source file, so that editing the function reruns the stage"""

    def __post_init__(self) -> None:
        try:
            fn = import_object(self.function, "function")
        except ValueError as e:
            raise ValueError(f"function: {e}") from None
        if not callable(fn):
            raise ValueError(f"function: {self.function!r} is not callable")
        if not isinstance(self.reason, str) or not self.reason:
            raise ValueError("reason: give a non-empty string")
        self.code_digest = source_digest(fn)


class FilterStage:
    """Keeps a document where the user's function returns True, drops it with the returned reason."""

    def __init__(self, config: FilterConfig, name: str = "filter"):
        self.config, self.name = config, name
        self._fn: Callable[[dict], Any] | None = None

    def setup(self) -> None:
        self._fn = import_object(self.config.function, "function")

    def process(self, table: pa.Table) -> StageOutput:
        reasons = [self._decide(doc) for doc in table.to_pylist()]
        return split_by_reason(table, self.name, reasons)

    def _decide(self, doc: dict) -> str | None:
        verdict = self._fn(doc)
        if verdict is True:
            return None
        if verdict is False:
            return self.config.reason
        if isinstance(verdict, str) and verdict:
            return verdict
        raise ValueError(f"stage {self.name}: {self.config.function} returned {verdict!r} for document "
                         f"{doc.get('id')!r}; it must return True (keep), False or a reason string (drop)")


def user_stage_class(kind: str) -> type:
    """The stage class a `module:Class` kind names, checked against the map-stage contract; a
    scorer class (`scorers/base.py`) becomes a stage through the one scoring stage."""
    from curate.scorers.base import is_scorer_class
    from curate.stages.score.stage import scorer_stage

    cls = import_object(kind, "a stage kind")
    if is_scorer_class(cls):
        return scorer_stage(cls)
    missing = [m for m in ("setup", "process") if not callable(getattr(cls, m, None))]
    if not inspect.isclass(cls) or missing:
        raise ValueError(f"{kind!r} is not a stage class: a stage kind given by import path is a class with "
                         f"`__init__(config, name)`, `setup()` and `process(table) -> StageOutput` "
                         f"(stages/filter/word_count.py is the smallest example)" + (f"; it lacks {missing}" if missing else ""))
    return cls


@dataclass
class NoFields:
    """The config of a user's stage class that declares no `Config` dataclass."""

    code_digest: str | None = None
