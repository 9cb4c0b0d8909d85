"""datatrove's heuristic quality filters, called as they are, with English-only rules gated by language.

The filters (Gopher quality and repetition, Rae et al. 2021, https://arxiv.org/abs/2112.11446;
C4, Raffel et al. 2020; FineWeb, Penedo et al. 2024, https://arxiv.org/abs/2406.17557) are
datatrove's own classes: each document becomes a datatrove `Document` and each filter's
`filter(doc)` decides. Its answer is `True` or `(False, reason)`; the reason is kept verbatim and
prefixed with the filter's config name, e.g. `gopher_quality:gopher_short_doc` (two datatrove
filters both say `empty`, so the prefix is what makes a reason name one rule).

Rules written for English must not remove other languages (a German page has no English stop
words). Each filter has a policy for documents whose language is not English: run as is, run with
some parameters overridden (Gopher quality without its English stop-word rule), or skip. Word
splitting uses datatrove's tokenizer for the document's language (spaCy for most), falling back to
its whitespace tokenizer where a language's tokenizer needs packages that are not installed.

Speed: each document's words are split once and shared by the filters (scorers/wordsplit.py
gives spaCy's words per whitespace chunk, remembered), and the Gopher rules run as restated in
scorers/heuristic_rules.py over quantities computed once per document; the first rule that drops
a document ends its work. Decisions and reasons stay the datatrove classes' (tests compare).

C4's filter also rewrites `doc.text` (it drops lines); only its keep/drop decision is used here,
because a stage never rewrites the text column (docs/internals.md, "Delta shards").
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Sequence

from curate.scorers.heuristic_rules import SIGNALS, DocFeatures, fast_rule, signals  # noqa: F401 (SIGNALS, signals: the stage's)

# config name -> (module, class) of the datatrove filter
FILTER_CLASSES: dict[str, tuple[str, str]] = {
    "gopher_quality": ("datatrove.pipeline.filters.gopher_quality_filter", "GopherQualityFilter"),
    "gopher_repetition": ("datatrove.pipeline.filters.gopher_repetition_filter", "GopherRepetitionFilter"),
    "c4_quality": ("datatrove.pipeline.filters.c4_filters", "C4QualityFilter"),
    "fineweb_quality": ("datatrove.pipeline.filters.fineweb_quality_filter", "FineWebQualityFilter"),
}

# What a filter does to non-English documents by default: parameter overrides, or "skip".
# gopher_quality: `min_stop_words` counts English stop words ("the", "be", "to", ...).
# c4_quality: English word lists ("javascript", cookie/terms-of-use phrases, "lorem ipsum") and
#   English end-of-line punctuation; mC4 (Xue et al. 2021) dropped these rules for other languages.
NON_ENGLISH_DEFAULTS: dict[str, dict[str, Any] | str] = {
    "gopher_quality": {"min_stop_words": None},
    "gopher_repetition": {},
    "c4_quality": "skip",
    "fineweb_quality": {},
}

ENGLISH_TOKENIZER = "en"

# A rule turned off where a quantile threshold has no value (datatrove's Gopher rules skip a
# falsy threshold; FineWeb's compare it, so these values never drop).
OFF_VALUES: dict[tuple[str, str], Any] = {("fineweb_quality", "line_punct_thr"): -1.0,
                                          ("fineweb_quality", "short_line_thr"): 2.0}


def _datatrove_words():
    # datatrove splits words with spaCy's blank pipelines (no model download), also in its
    # whitespace fallback; without spaCy every word-based filter would fail mid-batch.
    try:
        import spacy  # noqa: F401
        from datatrove.utils import word_tokenizers
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("heuristic filters need datatrove and spaCy: pip install datatrove spacy") from e
    return word_tokenizers


def _shared_tokenizer_class():
    """A datatrove `WordTokenizer` that remembers the last text it split.

    Gopher quality, Gopher repetition and FineWeb each split the same text into words; sharing
    the last result (keyed by the text object's identity) tokenizes every document once. `fast`
    gives the same words as `base` by a faster route where one is proven (scorers/wordsplit.py).
    """
    wt = _datatrove_words()

    class SharedTokenizer(wt.WordTokenizer):
        def __init__(self, base, language: str, fast=None):
            super().__init__(language)
            self.base = base
            self.split = (fast or base).word_tokenize
            self._last_text: str | None = None
            self._last_words: list[str] = []

        def word_tokenize(self, text: str) -> list[str]:
            if text is not self._last_text:
                self._last_words = self.split(text)
                self._last_text = text
            return self._last_words

        def sent_tokenize(self, text: str) -> list[str]:
            return self.base.sent_tokenize(text)

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return self.base.span_tokenize(text)

    return SharedTokenizer


def _tokenizer_for(lang: str):
    """datatrove's tokenizer for `lang`, or its whitespace fallback when that one cannot load."""
    wt = _datatrove_words()
    try:
        base = wt.load_word_tokenizer(lang)
        base.word_tokenize("probe text")  # loads spaCy / optional packages now, not mid-batch
    except (ValueError, ImportError, OSError):
        base = wt.WhitespaceTokenizer()
    from curate.scorers.wordsplit import fast_word_splitter

    return _shared_tokenizer_class()(base, lang, fast_word_splitter(base))


class HeuristicFilters:
    """Runs the configured datatrove filters over documents; the first failing filter decides.

    `specs`: (name, params, non_english[, lang_params]) tuples, where `non_english` is "apply",
    "skip" or a dict of parameter overrides, and `lang_params` maps a language code to overrides
    applied last for documents in that language. `english`: language codes treated as English.
    `tokenizers`: a dict shared between instances (one spaCy pipeline per language per worker).
    """

    def __init__(self, specs: Sequence[tuple], english: Sequence[str] = ("en",),
                 exempt_sources: Sequence[str] = (), tokenizers: dict[str, Any] | None = None,
                 thresholds: Any = None):
        for spec in specs:
            if spec[0] not in FILTER_CLASSES:
                raise ValueError(f"unknown filter {spec[0]!r}; valid: {', '.join(FILTER_CLASSES)}")
        self.specs = [(s[0], dict(s[1]), s[2], dict(s[3]) if len(s) > 3 and s[3] else {},
                       list(s[4]) if len(s) > 4 and s[4] else []) for s in specs]
        self.english = set(english)
        self.exempt_sources = list(exempt_sources)
        # `{quantile: q}` parameters (stages/filter/quantiles.py): their value depends on the group.
        self.grouped = any(s[4] for s in self.specs)
        self.thresholds = thresholds
        self._filters: dict[tuple[str, str | None], list[tuple[str, Any, Any]]] = {}
        self._tokenizers: dict[str, Any] = {} if tokenizers is None else tokenizers

    def _tokenizer(self, key: str):
        tok = self._tokenizers.get(key)
        if tok is None:
            tok = self._tokenizers[key] = _tokenizer_for(key)
        return tok

    def filters_for(self, lang: str, group: str | None = None) -> list[tuple[str, Any, Any]]:
        """The (name, datatrove filter, restated rule or None) list that applies to a document in
        `lang` of `group` (domain|lang, for quantile thresholds)."""
        group = group if self.grouped else None
        cached = self._filters.get((lang, group))
        if cached is not None:
            return cached
        english = lang in self.english
        key = ENGLISH_TOKENIZER if english else lang
        built = []
        for name, params, non_english, lang_params, quantiles in self.specs:
            kwargs = dict(params)
            for q in quantiles:
                value = self.thresholds.value(group or "", q) if self.thresholds is not None else q.fallback
                kwargs[q.param] = value if value is not None else OFF_VALUES.get((name, q.param))
            if not english:
                if non_english == "skip":
                    continue
                if isinstance(non_english, dict):
                    kwargs.update(non_english)
            kwargs.update(lang_params.get(lang, {}))
            module, cls = FILTER_CLASSES[name]
            filter_cls = getattr(importlib.import_module(module), cls)
            try:
                filt = filter_cls(language=self._tokenizer(key), **kwargs)
            except TypeError as e:
                raise ValueError(f"filter {name}: bad params {kwargs}: {e}") from None
            built.append((name, filt, fast_rule(filt)))
        self._filters[(lang, group)] = built
        return built

    def features(self, text: str, lang: str) -> DocFeatures:
        """The document as the rules see it: its words split as datatrove's filters split them
        (once, shared by the filters and the signals)."""
        return DocFeatures(text, self._tokenizer(ENGLISH_TOKENIZER if lang in self.english else lang).word_tokenize)

    def exempt(self, source: str | None) -> bool:
        return bool(source) and any(fnmatch.fnmatchcase(source, pat) for pat in self.exempt_sources)

    def decide(self, feats: DocFeatures, lang: str, group: str | None = None) -> str | None:
        """None to keep the document, else the reason `<filter>:<datatrove reason>`."""
        from datatrove.data import Document

        for name, filt, rule in self.filters_for(lang, group):
            try:
                if rule is not None:
                    reason = rule(filt, feats)
                    if reason is not None:
                        return f"{name}:{reason}"
                    continue
                # A fresh Document per filter: C4's filter rewrites doc.text, and that must not leak.
                result = filt.filter(Document(text=feats.text, id=""))
            except Exception as e:  # a filter's arithmetic on a degenerate text (no words, ...)
                return f"{name}:error_{type(e).__name__}"
            keep, reason = (result if isinstance(result, tuple) else (result, None))
            if not keep:
                return f"{name}:{reason or 'dropped'}"
        return None
