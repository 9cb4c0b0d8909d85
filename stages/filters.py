"""Map stage `heuristics`: datatrove's heuristic filters, gated by language.

Each dropped document goes to `rejected/<stage>/` with reason `<filter>:<datatrove reason>`
(e.g. `gopher_quality:gopher_short_doc`), so `SELECT reason, count(*) FROM rejected GROUP BY 1`
answers "what removed what". English-only rules apply to documents whose `lang` is English.

The stage reads the `lang` column written by the `langid` stage (run it first, as
configs/annotate.yaml does). Without that column it identifies languages itself, for gating only:
it adds no column, so the langid stage can still run later and own `lang`.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from scorers.heuristics import FILTER_CLASSES, NON_ENGLISH_DEFAULTS, HeuristicFilters
from stages.base import StageOutput, split_by_reason

FilterName = Literal["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"]


@dataclass
class FilterSpec:
    """One datatrove filter and how it treats non-English documents."""

    filter: FilterName
    """Which datatrove filter: gopher_quality, gopher_repetition, c4_quality or fineweb_quality."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the datatrove class as they are (thresholds, e.g. `min_doc_words: 50`)."""
    non_english: Literal["default", "apply", "skip"] = "default"
    """For documents not in English: `default` (the filter's own policy: gopher_quality drops its
    stop-word rule, c4_quality is skipped, the others apply), `apply` (with `non_english_params`
    overrides, if any) or `skip`."""
    non_english_params: dict[str, Any] | None = None
    """Parameter overrides for non-English documents (with `non_english: apply`); null = none."""

    def __post_init__(self):
        if self.filter not in FILTER_CLASSES:
            raise ValueError(f"filter: {self.filter!r} is not a filter; valid: {', '.join(FILTER_CLASSES)}")
        if self.non_english not in ("default", "apply", "skip"):
            raise ValueError(f"non_english: {self.non_english!r}; valid: default, apply, skip")
        if not isinstance(self.params, dict):
            raise ValueError(f"params: expected a mapping of {self.filter} keyword arguments, got {self.params!r}")
        _check_params(self.filter, self.params, "params")
        if self.non_english_params is not None:
            if not isinstance(self.non_english_params, dict):
                raise ValueError(f"non_english_params: expected a mapping of {self.filter} keyword arguments or "
                                 f"null, got {self.non_english_params!r}")
            if self.non_english != "apply":
                # Otherwise they would be silently ignored.
                raise ValueError(f"non_english_params: only used with `non_english: apply` "
                                 f"(this filter has non_english: {self.non_english})")
            _check_params(self.filter, self.non_english_params, "non_english_params")

    def policy(self) -> dict[str, Any] | str:
        if self.non_english == "skip":
            return "skip"
        if self.non_english == "apply":
            return dict(self.non_english_params or {})
        return NON_ENGLISH_DEFAULTS[self.filter]


# Set by the stage itself: `language` (the document's tokenizer) and `exclusion_writer` (dropped
# documents go to rejected/).
_OWN_PARAMS = ("self", "language", "exclusion_writer")
_SIMPLE = {int: (int,), float: (int, float), bool: (bool,), str: (str,), type(None): (type(None),),
           list: (list,), tuple: (list, tuple)}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
          list: "a list", tuple: "a list"}


def _check_params(name: str, params: dict, field_name: str) -> None:
    """Refuse at config load what the datatrove class would refuse only inside a worker, after
    ingest: a parameter it does not take, or a value of the wrong kind (from its annotations)."""
    module, cls = FILTER_CLASSES[name]
    try:
        filter_cls = getattr(importlib.import_module(module), cls)
    except ImportError:
        return  # the stage's setup names the package to install
    sig = inspect.signature(filter_cls.__init__)
    valid = [p.name for p in sig.parameters.values()
             if p.name not in _OWN_PARAMS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    try:
        hints = typing.get_type_hints(filter_cls.__init__)
    except Exception:  # an annotation that does not resolve: check the names only
        hints = {}
    for key, value in params.items():
        if key not in valid:
            raise ValueError(f"{field_name}: {name} ({cls}) has no parameter {key!r}; valid: {', '.join(valid)}")
        allowed, names = _allowed_types(hints.get(key))
        if allowed and (not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)):
            raise ValueError(f"{field_name}: {name} parameter {key!r} must be {names}, got {value!r}")


def _allowed_types(tp: Any) -> tuple[tuple, str]:
    """The Python types a YAML value may have for annotation `tp`, and their description;
    ((), "") when the annotation is not one of the simple kinds."""
    if tp is None:
        return (), ""
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    bases = [typing.get_origin(a) or a for a in args]
    if not all(b in _SIMPLE for b in bases):
        return (), ""
    allowed = tuple(dict.fromkeys(t for b in bases for t in _SIMPLE[b]))
    return allowed, " or ".join(dict.fromkeys(_NAMES[b] for b in bases))


def _default_filters() -> list[FilterSpec]:
    return [FilterSpec("gopher_repetition"), FilterSpec("gopher_quality"), FilterSpec("fineweb_quality")]


@dataclass
class HeuristicsConfig:
    """Config of the `heuristics` stage."""

    filters: list[FilterSpec] = field(default_factory=_default_filters)
    """Filters in the order they run; the first one that drops a document names the reason."""
    english: list[str] = field(default_factory=lambda: ["en"])
    """`lang` codes treated as English (English-only rules apply to these only)."""
    exempt_sources: list[str] = field(default_factory=list)
    """Glob patterns on `source` whose documents pass unfiltered (e.g. code, which web-text
    heuristics would remove for its symbols); counted as `exempt`."""
    lid_max_chars: int = 2000
    """Characters read by the built-in language ID when the input has no `lang` column."""

    def __post_init__(self):
        # Entries arrive as FilterSpec: the config loader (records/typed.py) builds nested
        # dataclasses and names a bad entry's field, e.g. `stages[1].filters[0].fliter`.
        if not self.english or not all(isinstance(x, str) and x for x in self.english):
            raise ValueError(f"english: expected a non-empty list of language codes, got {self.english!r}")
        if self.lid_max_chars < 1:
            raise ValueError(f"lid_max_chars: must be >= 1, got {self.lid_max_chars}")


class HeuristicsStage:
    """Drops documents that datatrove's heuristics reject, with the exact reason."""

    def __init__(self, config: HeuristicsConfig, name: str = "heuristics"):
        self.config = config
        self.name = name
        self._impl: HeuristicFilters | None = None
        self._lid = None

    def setup(self) -> None:
        self._impl = HeuristicFilters(
            [(f.filter, f.params, f.policy()) for f in self.config.filters],
            english=self.config.english,
            exempt_sources=self.config.exempt_sources,
        )
        # Build the English filters (and load spaCy) and a non-English set now rather than inside
        # the first batch: bad `params` / `non_english_params` fail before any document is read.
        self._impl.filters_for(self.config.english[0])
        if "und" not in self.config.english:
            self._impl.filters_for("und")

    def _langs(self, table: pa.Table, counters: dict[str, int]) -> list[str]:
        if "lang" in table.column_names:
            return [x if x is not None else "und" for x in table.column("lang").to_pylist()]
        if self._lid is None:
            from scorers.langid import LangID

            self._lid = LangID(max_chars=self.config.lid_max_chars)
        counters["lang_identified_here"] = table.num_rows
        return self._lid.predict(table.column("text").to_pylist())[0]

    def process(self, table: pa.Table) -> StageOutput:
        if self._impl is None:
            self.setup()
        counters: dict[str, int] = {"exempt": 0, "non_english": 0}
        texts = table.column("text").to_pylist()
        sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * len(texts)
        langs = self._langs(table, counters)
        english = set(self.config.english)
        reasons: list[str | None] = []
        for text, source, lang in zip(texts, sources, langs):
            if self._impl.exempt(source):
                counters["exempt"] += 1
                reasons.append(None)
                continue
            counters["non_english"] += lang not in english
            reasons.append(self._impl.decide(text, lang))
        return split_by_reason(table, self.name, reasons, counters)
