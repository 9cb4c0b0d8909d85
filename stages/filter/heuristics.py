"""Map stage `heuristics`: datatrove's heuristic filters, gated by language.

Each dropped document goes to `rejected/<stage>/` with reason `<filter>:<datatrove reason>`
(e.g. `gopher_quality:gopher_short_doc`), so `SELECT reason, count(*) FROM rejected GROUP BY 1`
answers "what removed what". English-only rules apply to documents whose `lang` is English.

The stage reads the `lang` column written by the `langid` stage (run it first, as
configs/annotate.yaml does). Without that column it identifies languages itself, for gating only:
it adds no column, so the langid stage can still run later and own `lang`.

The decision is a policy over the filters: `rule_sets` pick the filters (and parameters) per
domain, source glob and language, first match wins, the top-level `filters` being the `default`
set; `lang_params` adapt a filter's thresholds per language. `signals: true` records the numbers
the filters threshold (`hs_*` columns) and `mode: annotate` records the would-be reason instead
of dropping, so a mixture can weight by columns (Dolma's taggers, then its mixer).
"""

from __future__ import annotations

import fnmatch
import importlib
import inspect
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import pyarrow as pa

from curate.scorers.heuristics import FILTER_CLASSES, NON_ENGLISH_DEFAULTS, SIGNALS, HeuristicFilters, signals
from curate.stages.base import Declares, Prepared, StageOutput, split_by_reason
from curate.stages.filter.quantiles import Quantile, Thresholds, group_key, split_quantiles

FilterName = Literal["gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality"]


@dataclass
class FilterSpec:
    """One datatrove filter and how it treats non-English documents."""

    filter: FilterName
    """Which datatrove filter: gopher_quality, gopher_repetition, c4_quality or fineweb_quality."""
    params: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments passed to the datatrove class as they are (thresholds, e.g. `min_doc_words: 50`);
    a threshold may be `{quantile: q}`, the value keeping the share q of each group (domain x
    language) on that rule's signal (stages/filter/quantiles.py, docs/annotate.md)."""
    non_english: Literal["default", "apply", "skip"] = "default"
    """For documents not in English: `default` (the filter's own policy: gopher_quality drops its
    stop-word rule, c4_quality is skipped, the others apply), `apply` (with `non_english_params`
    overrides, if any) or `skip`."""
    non_english_params: dict[str, Any] | None = None
    """Parameter overrides for non-English documents (with `non_english: apply`); null = none."""
    lang_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-language overrides applied last for documents whose `lang` is the key, e.g.
    `{es: {max_non_alpha_words_ratio: 0.7}}` (FineWeb-2's adapted thresholds)."""

    def __post_init__(self):
        if self.filter not in FILTER_CLASSES:
            raise ValueError(f"filter: {self.filter!r} is not a filter; valid: {', '.join(FILTER_CLASSES)}")
        if self.non_english not in ("default", "apply", "skip"):
            raise ValueError(f"non_english: {self.non_english!r}; valid: default, apply, skip")
        if not isinstance(self.params, dict):
            raise ValueError(f"params: expected a mapping of {self.filter} keyword arguments, got {self.params!r}")
        plain, self._quantiles = split_quantiles(self.filter, self.params, "params")
        _check_params(self.filter, plain, "params")
        self._plain = plain
        if self.non_english_params is not None:
            if not isinstance(self.non_english_params, dict):
                raise ValueError(f"non_english_params: expected a mapping of {self.filter} keyword arguments or "
                                 f"null, got {self.non_english_params!r}")
            if self.non_english != "apply":
                # Otherwise they would be silently ignored.
                raise ValueError(f"non_english_params: only used with `non_english: apply` "
                                 f"(this filter has non_english: {self.non_english})")
            _check_params(self.filter, self.non_english_params, "non_english_params")
        if not isinstance(self.lang_params, dict):
            raise ValueError(f"lang_params: expected a mapping of language code -> parameters, got {self.lang_params!r}")
        for lang, overrides in self.lang_params.items():
            if not isinstance(overrides, dict):
                raise ValueError(f"lang_params.{lang}: expected a mapping of {self.filter} keyword arguments, "
                                 f"got {overrides!r}")
            _check_params(self.filter, overrides, f"lang_params.{lang}")

    def spec(self) -> tuple:
        return self.filter, self._plain, self.policy(), self.lang_params, self._quantiles

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
class RuleMatch:
    """Which documents a rule set applies to: every listed key must match (empty = any)."""

    domain: list[str] = field(default_factory=list)
    """Values of the `domain` column (tag domains before this stage)."""
    source: list[str] = field(default_factory=list)
    """Glob patterns on the `source` column."""
    lang: list[str] = field(default_factory=list)
    """Values of the `lang` column."""

    def __post_init__(self):
        for key in ("domain", "source", "lang"):
            v = getattr(self, key)
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise ValueError(f"match.{key}: expected a list of strings, got {v!r}")

    def matches(self, domain: str | None, source: str | None, lang: str) -> bool:
        return ((not self.domain or domain in self.domain)
                and (not self.source or (source is not None and any(fnmatch.fnmatchcase(source, g) for g in self.source)))
                and (not self.lang or lang in self.lang))


@dataclass
class RuleSet:
    """Filters for the documents that `match` selects; the first matching rule set wins."""

    name: str
    """Recorded in `heuristics_rule_set` (annotate mode); `default` is the top-level `filters`."""
    match: RuleMatch = field(default_factory=RuleMatch)
    """Which documents (domain / source glob / lang); an empty match takes every document."""
    filters: list[FilterSpec] = field(default_factory=list)
    """Filters in order for these documents; an empty list keeps them all (exempt)."""

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name or self.name == "default":
            raise ValueError(f"name: a rule set needs a name other than 'default' (the top-level filters), got {self.name!r}")


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
    rule_sets: list[RuleSet] = field(default_factory=list)
    """Policies by domain / source / lang, tried in order; the first match decides which filters
    apply. Documents no rule set matches get the `default` set: `filters` above."""
    mode: Literal["drop", "annotate"] = "drop"
    """`drop`: rejected documents go to `rejected/`. `annotate`: keep every document and record
    the would-be reason in `heuristics_reason` (null = passes) and the rule set in
    `heuristics_rule_set`, so a mixture can weight by columns instead."""
    signals: bool = False
    """Record the signals the filters threshold as `hs_*` columns (docs/annotate.md lists them)."""
    sample_docs: int = 1000
    """For `{quantile: q}` thresholds: documents sampled per group (domain x language), by a salted
    hash of their id, to compute the group's quantiles before the stage runs."""
    min_group_docs: int = 50
    """A group with fewer sampled documents uses its domain's quantiles over all languages, and a
    domain with fewer uses each quantile's `fallback` (null: that rule is off)."""
    resolved: dict[str, Any] | None = None
    """Set by the run, not in a config: each group's quantile thresholds (RUN/<stage>/thresholds.json)."""

    def quantiles(self) -> list[Quantile]:
        """Every `{quantile: q}` parameter of the default set and the rule sets."""
        specs = list(self.filters) + [f for r in self.rule_sets for f in r.filters]
        return [q for f in specs for q in f._quantiles]

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return (list(SIGNALS) if self.signals else []) + \
            (["heuristics_reason", "heuristics_rule_set"] if self.mode == "annotate" else [])

    def __post_init__(self):
        if self.mode not in ("drop", "annotate"):
            raise ValueError(f"mode: {self.mode!r}; valid: drop, annotate")
        names = [r.name for r in self.rule_sets]
        if len(set(names)) != len(names):
            raise ValueError(f"rule_sets: names must be unique, got {names}")
        # Entries arrive as FilterSpec: the config loader (records/typed.py) builds nested
        # dataclasses and names a bad entry's field, e.g. `stages[1].filters[0].fliter`.
        if not self.english or not all(isinstance(x, str) and x for x in self.english):
            raise ValueError(f"english: expected a non-empty list of language codes, got {self.english!r}")
        if self.lid_max_chars < 1:
            raise ValueError(f"lid_max_chars: must be >= 1, got {self.lid_max_chars}")
        if self.sample_docs < 1:
            raise ValueError(f"sample_docs: documents sampled per group, >= 1; got {self.sample_docs}")
        if not 1 <= self.min_group_docs <= self.sample_docs:
            raise ValueError(f"min_group_docs: between 1 and sample_docs ({self.sample_docs}), got {self.min_group_docs}")


class HeuristicsStage:
    """Drops documents that datatrove's heuristics reject, with the exact reason."""

    declares = Declares(prepares=True)  # `{quantile: q}` thresholds are resolved on the run first

    def __init__(self, config: HeuristicsConfig, name: str = "heuristics"):
        self.config = config
        self.name = name
        self._impl: HeuristicFilters | None = None
        self._lid = None

    def prepare(self, run_dir: Path, inputs: list[Path], say: Callable[[str], None]) -> Prepared:
        """Per-group quantile thresholds from a sample of the run (stages/filter/heuristics_prepare.py)."""
        from curate.stages.filter.heuristics_prepare import prepare_heuristics

        return prepare_heuristics(self, run_dir, inputs, say)

    def setup(self) -> None:
        tokenizers: dict[str, Any] = {}  # one spaCy pipeline per language, shared by the rule sets
        cfg = self.config
        # Without a resolved table (the stage used outside a run) each quantile uses its fallback.
        limits = Thresholds(cfg.resolved)
        self._sets = [(r.name, r.match, HeuristicFilters([f.spec() for f in r.filters], english=cfg.english,
                                                         tokenizers=tokenizers, thresholds=limits))
                      for r in cfg.rule_sets]
        self._impl = HeuristicFilters([f.spec() for f in cfg.filters], english=cfg.english,
                                      exempt_sources=cfg.exempt_sources, tokenizers=tokenizers, thresholds=limits)
        # Build the English filters (and load spaCy) and a non-English set now rather than inside
        # the first batch: bad `params` / `non_english_params` fail before any document is read.
        for impl in [self._impl] + [s[2] for s in self._sets]:
            impl.filters_for(cfg.english[0])
            if "und" not in cfg.english:
                impl.filters_for("und")

    def _rule_set(self, domain: str | None, source: str | None, lang: str) -> tuple[str, HeuristicFilters]:
        for name, match, impl in self._sets:
            if match.matches(domain, source, lang):
                return name, impl
        return "default", self._impl

    def _langs(self, table: pa.Table, counters: dict[str, int]) -> list[str]:
        if "lang" in table.column_names:
            return [x if x is not None else "und" for x in table.column("lang").to_pylist()]
        if self._lid is None:
            from curate.scorers.langid import LangID

            self._lid = LangID(max_chars=self.config.lid_max_chars)
        counters["lang_identified_here"] = table.num_rows
        return self._lid.predict(table.column("text").to_pylist())[0]

    def process(self, table: pa.Table) -> StageOutput:
        if self._impl is None:
            self.setup()
        cfg = self.config
        counters: dict[str, int] = {"exempt": 0, "non_english": 0}
        texts = table.column("text").to_pylist()
        n = len(texts)
        sources = table.column("source").to_pylist() if "source" in table.column_names else [None] * n
        domains = table.column("domain").to_pylist() if "domain" in table.column_names else [None] * n
        langs = self._langs(table, counters)
        english = set(cfg.english)
        reasons: list[str | None] = []
        sets: list[str] = []
        sigs: list[dict] = []
        for text, source, domain, lang in zip(texts, sources, domains, langs):
            set_name, impl = self._rule_set(domain, source, lang)
            sets.append(set_name)
            counters[f"rule_set_{set_name}"] = counters.get(f"rule_set_{set_name}", 0) + 1
            feats = impl.features(text, lang)
            if self._impl.exempt(source):
                counters["exempt"] += 1
                reasons.append(None)
            else:
                counters["non_english"] += lang not in english
                reasons.append(impl.decide(feats, lang, group_key(domain, lang)))
            if cfg.signals:  # after decide: what the rules computed is reused
                sigs.append(signals(feats))
        if cfg.signals:
            for col, (typ, _) in SIGNALS.items():
                table = table.append_column(col, pa.array([s[col] for s in sigs], getattr(pa, typ)()))
        if cfg.mode == "annotate":
            counters["would_drop"] = sum(r is not None for r in reasons)
            table = table.append_column("heuristics_reason", pa.array(reasons, pa.string()))
            table = table.append_column("heuristics_rule_set", pa.array(sets, pa.string()))
            return StageOutput(kept=table, counters=counters)
        return split_by_reason(table, self.name, reasons, counters)
