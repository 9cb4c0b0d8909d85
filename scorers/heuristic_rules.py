"""datatrove's Gopher rules and the `hs_*` signals, from quantities computed once per document.

datatrove's `GopherRepetitionFilter.filter` and `GopherQualityFilter.filter` (datatrove 0.10)
are restated here step for step, same order, same reasons, same float expressions, reading the
thresholds from the datatrove filter object itself, so the decision is the filter's. What
differs is how each quantity is computed:

- duplicate lines / paragraphs: set sizes instead of a Python loop (`find_duplicates` counts every
  repeat of an element and its characters: total minus the distinct ones);
- n-grams are grouped as word tuples once per n (`tuple_groups`, numbered from the (n-1)-grams),
  each level one pass of Arrow's hash encoding (a numpy sort for short documents);
- top n-gram (`find_top_duplicate` over `" ".join` n-grams): counted from those groups, the same
  count because no word holds a space (checked, else datatrove's own functions run); ties go to
  the n-gram seen first in both (Counter order, `max`);
- duplicated n-grams (`find_all_duplicate`, a left-to-right scan over `"".join` n-grams that
  jumps past a repeat): each n-gram's first occurrence comes from its group where the groups'
  strings are shown distinct (`string_firsts`, else the strings are compared), and the scan
  visits only the n-grams seen before, since any other is new where the scan reaches it; it
  stops once the threshold is passed (the count only grows);
- Gopher quality's per-character checks: `str.strip` over datatrove's punctuation set for
  "has a non-punctuation character", a regex holding exactly the characters for which
  `str.isalpha()` is true for "has a letter".

The n-gram counts live in scorers/ngram_repeats.py. tests/test_heuristics_fast.py compares each
quantity with datatrove's function on real text.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from itertools import accumulate, repeat
from operator import itemgetter, methodcaller
from typing import Any, Callable, Iterable

from curate.scorers.ngram_repeats import B, P, dup_ngram_exceeds, groups_of, powers, top_ngram_chars

_PARAGRAPHS = re.compile(r"\n{2,}")  # GopherRepetitionFilter.paragraph_exp
_LINES = re.compile("\n+")  # GopherRepetitionFilter._line_splitter


@lru_cache(maxsize=1)
def alpha_pattern() -> re.Pattern:
    """A character class of exactly the code points whose `str.isalpha()` is true."""
    # isalpha() implies \w and neither a decimal digit nor "_": the regex narrows, isalpha decides
    letters = [ord(c) for c in re.findall(r"[^\W\d_]", "".join(map(chr, range(0x110000)))) if c.isalpha()]
    ranges: list[tuple[int, int]] = []
    for cp in letters:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1] = (ranges[-1][0], cp)
        else:
            ranges.append((cp, cp))
    body = "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)
    return re.compile(f"[{body}]")


@lru_cache(maxsize=1)
def _punctuation() -> str:
    from datatrove.utils.text import PUNCTUATION_SET

    assert all(len(c) == 1 for c in PUNCTUATION_SET)
    return "".join(sorted(PUNCTUATION_SET))


class DocFeatures:
    """One document's text and what the rules derive from it, each computed on first use."""

    def __init__(self, text: str, split_words: Callable[[str], list[str]]):
        self.text = text
        self._split_words = split_words
        self._top: dict[int, int | None] = {}  # n -> top_ngram_chars (the rule and the signals share it)
        self._groups: dict[int, Any] = {}  # n -> tuple_groups

    @cached_property
    def words(self) -> list[str]:
        return self._split_words(self.text)

    @cached_property
    def spaceless(self) -> bool:
        """No word holds a space: `" ".join` then tells n-grams apart as tuples do."""
        return " " not in self.joined[0]

    @cached_property
    def _encoded(self):
        """(a number per word, numbered in order of first occurrence; the distinct words in that
        order), from one hash pass over the words (Arrow's dictionary encoding)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        codes = pc.dictionary_encode(pa.array(self.words, pa.large_string()))
        return codes.indices.to_numpy().astype(np.int64), codes.dictionary.to_pylist()

    @property
    def word_ids(self):
        return self._encoded[0]

    def tuple_groups(self, n: int):
        """The word n-grams grouped as word tuples, numbered from the (n-1)-grams' groups and
        the last word: (each group's first position, its size, each position's group)."""
        groups = self._groups.get(n)
        if groups is None:
            words = self.word_ids
            keys = words if n == 1 else self.tuple_groups(n - 1)[2][:-1] * len(self.distinct) + words[n - 1:]
            groups = self._groups[n] = groups_of(keys)
        return groups

    @cached_property
    def char_hashes(self):
        """(word starts, prefix sums of code point * B**i mod P, B**-i mod P): the hash of
        joined[a:b] is (prefix[b] - prefix[a]) * B**-a mod P."""
        import numpy as np

        joined, starts = self.joined
        points = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)
        prefix = np.zeros(len(points) + 1, dtype=np.int64)
        np.cumsum(points * powers(B, len(points)) % P, out=prefix[1:])  # < 2**31 per term
        return np.asarray(starts, dtype=np.int64), prefix % P, powers(pow(B, P - 2, P), len(points) + 1)

    @cached_property
    def paragraphs(self) -> list[str]:
        return _PARAGRAPHS.split(self.text.strip())

    @cached_property
    def lines(self) -> list[str]:
        return _LINES.split(self.text)

    @cached_property
    def paragraph_duplicates(self) -> tuple[int, int]:
        return find_duplicates(self.paragraphs)

    @cached_property
    def line_duplicates(self) -> tuple[int, int]:
        return find_duplicates(self.lines)

    @property
    def distinct(self) -> list[str]:
        """The words without repeats, in order: per-word tests run once per distinct word (a
        document repeats most of its words: 40 pydoc topics hold 43,852 words, 3,083 distinct)."""
        return self._encoded[1]

    @cached_property
    def _per_distinct(self):
        """(occurrences, length) of each distinct word."""
        import numpy as np

        distinct = self.distinct
        lengths = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))
        return np.bincount(self.word_ids, minlength=len(distinct)), lengths

    def _occurrences(self, chosen: Iterable[Any]):
        """Occurrences and lengths of the distinct words whose entry in `chosen` is true."""
        import numpy as np

        mask = np.fromiter(map(bool, chosen), dtype=bool, count=len(self.distinct))
        counts, lengths = self._per_distinct
        return counts[mask], lengths[mask]

    @cached_property
    def non_symbol(self) -> tuple[int, int]:
        """(words that are not punctuation only, their characters)."""
        # any(ch not in PUNCTUATION_SET for ch in w) <=> stripping those characters leaves some
        counts, lengths = self._occurrences(map(str.strip, self.distinct, repeat(_punctuation())))
        return int(counts.sum()), int(counts @ lengths)

    @cached_property
    def alpha_words(self) -> int:
        return int(self._occurrences(map(alpha_pattern().search, self.distinct))[0].sum())

    @cached_property
    def joined(self) -> tuple[str, list[int]]:
        """The words concatenated and where each starts: `"".join(words[i:i+n])` is a slice."""
        return "".join(self.words), list(accumulate(map(len, self.words), initial=0))


def find_duplicates(items: list[str]) -> tuple[int, int]:
    """datatrove's `find_duplicates`: (repeated elements, their characters)."""
    distinct = set(items)
    return len(items) - len(distinct), sum(map(len, items)) - sum(map(len, distinct))


def gopher_repetition(filt: Any, feats: DocFeatures) -> str | None:
    """`GopherRepetitionFilter.filter`: None to keep, else its reason."""
    text = feats.text
    if not text:
        return "empty"
    paragraphs = feats.paragraphs
    paragraphs_duplicates, char_duplicates = feats.paragraph_duplicates
    if filt.dup_para_frac and paragraphs_duplicates / len(paragraphs) > filt.dup_para_frac:
        return "dup_para_frac"
    if filt.dup_para_char_frac and char_duplicates / len(text) > filt.dup_para_char_frac:
        return "dup_para_char_frac"
    lines = feats.lines
    line_duplicates, char_duplicates = feats.line_duplicates
    if filt.dup_line_frac and line_duplicates / len(lines) > filt.dup_line_frac:
        return "dup_line_frac"
    if filt.dup_line_char_frac and char_duplicates / len(text) > filt.dup_line_char_frac:
        return "dup_line_char_frac"
    for n, n_frac in filt.top_n_grams:
        top_char_length = top_ngram_chars(feats, n)
        if top_char_length is not None and top_char_length / len(text) > n_frac:
            return f"top_{n}_gram"
    for n, n_frac in filt.dup_n_grams:
        if dup_ngram_exceeds(feats, n, lambda chars, f=n_frac: chars / len(text) > f):
            return f"duplicated_{n}_n_grams"
    return None


def gopher_quality(filt: Any, feats: DocFeatures) -> str | None:
    """`GopherQualityFilter.filter`: None to keep, else its reason."""
    text, words = feats.text, feats.words
    n_words = len(words)
    n_non_symbol_words, non_symbol_chars = feats.non_symbol
    if filt.min_doc_words and n_non_symbol_words < filt.min_doc_words:
        return "gopher_short_doc"
    if filt.max_doc_words and n_non_symbol_words > filt.max_doc_words:
        return "gopher_long_doc"
    # np.mean of word lengths: an exact integer sum over a count, divided once
    avg_n_words = non_symbol_chars / n_non_symbol_words if n_non_symbol_words else float("nan")
    if filt.min_avg_word_length and avg_n_words < filt.min_avg_word_length:
        return "gopher_below_avg_threshold"
    if filt.max_avg_word_length and avg_n_words > filt.max_avg_word_length:
        return "gopher_above_avg_threshold"
    if filt.max_symbol_word_ratio and text.count("#") / n_words > filt.max_symbol_word_ratio:
        return "gopher_too_many_hashes"
    if filt.max_symbol_word_ratio and (text.count("...") + text.count("…")) / n_words > filt.max_symbol_word_ratio:
        return "gopher_too_many_ellipsis"
    lines = text.splitlines()
    if filt.max_bullet_lines_ratio and (sum(map(methodcaller("startswith", ("•", "-")), map(str.lstrip, lines)))
                                        / len(lines) > filt.max_bullet_lines_ratio):
        return "gopher_too_many_bullets"
    if filt.max_ellipsis_lines_ratio and (sum(map(methodcaller("endswith", ("...", "…")), map(str.rstrip, lines)))
                                          / len(lines) > filt.max_ellipsis_lines_ratio):
        return "gopher_too_many_end_ellipsis"
    if filt.max_non_alpha_words_ratio and feats.alpha_words / n_words < filt.max_non_alpha_words_ratio:
        return "gopher_below_alpha_threshold"
    if filt.min_stop_words and len(filt.stop_words.intersection(feats.distinct)) < filt.min_stop_words:
        return "gopher_enough_stop_words"
    return None


def fast_rule(filt: Any) -> Callable[[Any, DocFeatures], str | None] | None:
    """The restated rule for a datatrove filter object, or None to call its own `filter`."""
    from datatrove.pipeline.filters.gopher_quality_filter import GopherQualityFilter
    from datatrove.pipeline.filters.gopher_repetition_filter import GopherRepetitionFilter

    if type(filt) is GopherQualityFilter:
        return gopher_quality
    if type(filt) is GopherRepetitionFilter:
        grams = list(filt.top_n_grams) + list(filt.dup_n_grams)
        if all(type(n) is int and n >= 1 for n, _ in grams):  # other n: datatrove's own oddities
            return gopher_repetition
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


@lru_cache(maxsize=1)
def _signal_constants() -> tuple[frozenset, tuple]:
    from datatrove.pipeline.filters.gopher_quality_filter import STOP_WORDS
    from datatrove.utils.text import TERMINAL_PUNCTUATION

    assert all(len(c) == 1 for c in TERMINAL_PUNCTUATION)  # so endswith(any) is the last character's
    return frozenset(STOP_WORDS), frozenset(TERMINAL_PUNCTUATION)


def signals(feats: DocFeatures) -> dict[str, float | int]:
    """The SIGNALS of one document, from the quantities its rules use (shared with `decide`)."""
    stop_words, terminal = _signal_constants()
    text, words = feats.text, feats.words
    n_non_symbol, non_symbol_chars = feats.non_symbol
    stripped = text.strip()
    blank_free = list(filter(str.strip, text.split("\n")))
    top2 = top_ngram_chars(feats, 2)
    return {
        "hs_words": n_non_symbol,
        "hs_mean_word_len": non_symbol_chars / n_non_symbol if n_non_symbol else 0.0,
        "hs_alpha_ratio": feats.alpha_words / len(words) if words else 0.0,
        "hs_stop_words": len(stop_words.intersection(feats.distinct)),
        "hs_dup_para_frac": feats.paragraph_duplicates[0] / len(feats.paragraphs) if stripped else 0.0,
        "hs_dup_line_frac": feats.line_duplicates[0] / len(feats.lines) if stripped else 0.0,
        "hs_top2gram_frac": top2 / len(text) if top2 is not None and text else 0.0,
        "hs_line_punct_ratio": (sum(map(terminal.__contains__, map(itemgetter(-1), blank_free))) / len(blank_free)
                                if blank_free else 0.0),
        "hs_short_line_ratio": sum(map((30).__ge__, map(len, blank_free))) / len(blank_free) if blank_free else 0.0,
    }
