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

C4's filter also rewrites `doc.text` (it drops lines); only its keep/drop decision is used here,
because a stage never rewrites the text column (docs/internals.md, "Delta shards").
"""

from __future__ import annotations

import fnmatch
import importlib
from typing import Any, Sequence

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
    the last result (keyed by the text object's identity) tokenizes every document once.
    """
    wt = _datatrove_words()

    class SharedTokenizer(wt.WordTokenizer):
        def __init__(self, base, language: str):
            super().__init__(language)
            self.base = base
            self._last_text: str | None = None
            self._last_words: list[str] = []

        def word_tokenize(self, text: str) -> list[str]:
            if text is not self._last_text:
                self._last_words = self.base.word_tokenize(text)
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
    return _shared_tokenizer_class()(base, lang)


class HeuristicFilters:
    """Runs the configured datatrove filters over documents; the first failing filter decides.

    `specs`: (name, params, non_english[, lang_params]) tuples, where `non_english` is "apply",
    "skip" or a dict of parameter overrides, and `lang_params` maps a language code to overrides
    applied last for documents in that language. `english`: language codes treated as English.
    `tokenizers`: a dict shared between instances (one spaCy pipeline per language per worker).
    """

    def __init__(self, specs: Sequence[tuple], english: Sequence[str] = ("en",),
                 exempt_sources: Sequence[str] = (), tokenizers: dict[str, Any] | None = None):
        for spec in specs:
            if spec[0] not in FILTER_CLASSES:
                raise ValueError(f"unknown filter {spec[0]!r}; valid: {', '.join(FILTER_CLASSES)}")
        self.specs = [(s[0], dict(s[1]), s[2], dict(s[3]) if len(s) > 3 and s[3] else {}) for s in specs]
        self.english = set(english)
        self.exempt_sources = list(exempt_sources)
        self._filters: dict[str, list[tuple[str, Any]]] = {}
        self._tokenizers: dict[str, Any] = {} if tokenizers is None else tokenizers

    def _tokenizer(self, key: str):
        tok = self._tokenizers.get(key)
        if tok is None:
            tok = self._tokenizers[key] = _tokenizer_for(key)
        return tok

    def filters_for(self, lang: str) -> list[tuple[str, Any]]:
        """The (name, datatrove filter) list that applies to a document in `lang`."""
        cached = self._filters.get(lang)
        if cached is not None:
            return cached
        english = lang in self.english
        key = ENGLISH_TOKENIZER if english else lang
        built = []
        for name, params, non_english, lang_params in self.specs:
            kwargs = dict(params)
            if not english:
                if non_english == "skip":
                    continue
                if isinstance(non_english, dict):
                    kwargs.update(non_english)
            kwargs.update(lang_params.get(lang, {}))
            module, cls = FILTER_CLASSES[name]
            filter_cls = getattr(importlib.import_module(module), cls)
            try:
                built.append((name, filter_cls(language=self._tokenizer(key), **kwargs)))
            except TypeError as e:
                raise ValueError(f"filter {name}: bad params {kwargs}: {e}") from None
        self._filters[lang] = built
        return built

    def words(self, text: str, lang: str) -> list[str]:
        """The words datatrove's filters split `text` into (shared: a text the filters already
        split is not split again)."""
        return self._tokenizer(ENGLISH_TOKENIZER if lang in self.english else lang).word_tokenize(text)

    def exempt(self, source: str | None) -> bool:
        return bool(source) and any(fnmatch.fnmatchcase(source, pat) for pat in self.exempt_sources)

    def decide(self, text: str, lang: str) -> str | None:
        """None to keep the document, else the reason `<filter>:<datatrove reason>`."""
        from datatrove.data import Document

        for name, filt in self.filters_for(lang):
            # A fresh Document per filter: C4's filter rewrites doc.text, and that must not leak.
            doc = Document(text=text, id="")
            try:
                result = filt.filter(doc)
            except Exception as e:  # a filter's arithmetic on a degenerate text (no words, ...)
                return f"{name}:error_{type(e).__name__}"
            keep, reason = (result if isinstance(result, tuple) else (result, None))
            if not keep:
                return f"{name}:{reason or 'dropped'}"
        return None


# Signals: the quantities the filters threshold, as numbers (datatrove's own definitions, so a
# threshold on a column decides as the filter would). Column name -> (Arrow type, meaning).
SIGNALS: dict[str, tuple[str, str]] = {
    "hs_words": ("int32", "words that are not punctuation only (Gopher's min/max_doc_words)"),
    "hs_mean_word_len": ("float32", "mean length of those words (Gopher's min/max_avg_word_length)"),
    "hs_alpha_ratio": ("float32", "share of tokens, punctuation tokens included, with a letter "
                                  "(Gopher's max_non_alpha_words_ratio)"),
    "hs_stop_words": ("int32", "distinct English stop words present (Gopher's min_stop_words)"),
    "hs_dup_para_frac": ("float32", "share of paragraphs that repeat an earlier one (Gopher's dup_para_frac)"),
    "hs_dup_line_frac": ("float32", "share of lines that repeat an earlier one (Gopher's dup_line_frac)"),
    "hs_top2gram_frac": ("float32", "characters of the most frequent word 2-gram times its count, over the "
                                    "text's characters (Gopher's top_n_grams for n=2)"),
    "hs_line_punct_ratio": ("float32", "share of non-blank lines ending in terminal punctuation "
                                       "(FineWeb's line_punct_thr)"),
    "hs_short_line_ratio": ("float32", "share of non-blank lines of at most 30 characters (FineWeb's "
                                       "short_line_thr)"),
}


def signals(text: str, words: list[str]) -> dict[str, float | int]:
    """The SIGNALS of one document, from its words as the filters split them."""
    import re

    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
    from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates, find_top_duplicate, get_n_grams
    from datatrove.utils.text import PUNCTUATION_SET, TERMINAL_PUNCTUATION

    non_symbol = [w for w in words if any(ch not in PUNCTUATION_SET for ch in w)]
    paragraphs = re.split(r"\n{2,}", text.strip())
    lines = re.split(r"\n+", text)
    blank_free = [ln for ln in text.split("\n") if ln.strip()]
    bigrams = get_n_grams(words, 2)
    return {
        "hs_words": len(non_symbol),
        "hs_mean_word_len": sum(map(len, non_symbol)) / len(non_symbol) if non_symbol else 0.0,
        "hs_alpha_ratio": sum(any(c.isalpha() for c in w) for w in words) / len(words) if words else 0.0,
        "hs_stop_words": len(set(STOP_WORDS).intersection(words)),
        "hs_dup_para_frac": find_duplicates(paragraphs)[0] / len(paragraphs) if text.strip() else 0.0,
        "hs_dup_line_frac": find_duplicates(lines)[0] / len(lines) if text.strip() else 0.0,
        "hs_top2gram_frac": find_top_duplicate(bigrams) / len(text) if bigrams and text else 0.0,
        "hs_line_punct_ratio": (sum(ln.endswith(tuple(TERMINAL_PUNCTUATION)) for ln in blank_free) / len(blank_free)
                                if blank_free else 0.0),
        "hs_short_line_ratio": sum(len(ln) <= 30 for ln in blank_free) / len(blank_free) if blank_free else 0.0,
    }
