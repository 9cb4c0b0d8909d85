"""The heuristics stage's faster routes give datatrove's own results: the word split
(scorers/wordsplit.py) equals spaCy's through datatrove, word for word, and each quantity the
restated Gopher rules and the signals use (scorers/heuristic_rules.py) equals the datatrove
function it replaces, on real text and on texts built to hit the edge cases."""

from __future__ import annotations

import re

import pytest

from curate.scorers.heuristic_rules import DocFeatures, alpha_pattern, fast_rule, find_duplicates, signals
from curate.scorers.ngram_repeats import dup_ngram_exceeds, string_firsts, top_ngram_chars
from test_scorers_corpus import codec_tables, licences, multilingual, pydoc_prose, pydoc_topics, stdlib_code


@pytest.fixture(scope="module")
def texts() -> list[str]:
    repeated = "\n".join([pydoc_prose(1)[0].splitlines()[0]] * 12)
    return (pydoc_prose(20) + pydoc_topics(10) + stdlib_code(12) + licences()[:6] + codec_tables(3)
            + [t for _, t in multilingual(["de", "fr", "es", "pl"])] + [repeated, "", "  \n\n ", "word"])


def _tokenizer(lang: str):
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    return load_word_tokenizer(lang)


def _splitter(lang: str):
    from curate.scorers.wordsplit import fast_word_splitter

    split = fast_word_splitter(_tokenizer(lang))
    assert split is not None, f"{lang}: datatrove's spaCy tokenizer expected"
    return split


@pytest.mark.parametrize("lang", ["en", "de"])
def test_word_split_equals_datatrove_on_real_text(texts, lang):
    base, fast = _tokenizer(lang), _splitter(lang)
    for _ in range(2):  # the second pass reads every chunk from the memo
        assert [fast.word_tokenize(t) for t in texts] == [base.word_tokenize(t) for t in texts]


def test_whitespace_fallback_gets_the_fast_split_too(texts):
    from datatrove.utils.word_tokenizers import WhitespaceTokenizer

    from curate.scorers.wordsplit import fast_word_splitter

    base = WhitespaceTokenizer()
    fast = fast_word_splitter(base)
    assert [fast.word_tokenize(t) for t in texts[:30]] == [base.word_tokenize(t) for t in texts[:30]]


def test_special_cases_cut_at_a_space_split_as_spacy_does():
    """spaCy's special-case matcher runs over the whole text, so a special case cut by a space
    can change words on both sides ("° k.'re" -> °, k, ., 're, where the chunks alone give k.).
    Every special case, cut at each of its token boundaries, alone and next to others."""
    from spacy.tokenizer import Tokenizer

    base, fast = _tokenizer("en"), _splitter("en")
    tok = fast.nlp.tokenizer
    bare = Tokenizer(fast.nlp.vocab, rules={}, prefix_search=tok.prefix_search, suffix_search=tok.suffix_search,
                     infix_finditer=tok.infix_finditer, token_match=tok.token_match, url_match=tok.url_match)
    keys = list(tok.rules)
    built = []
    for key in keys:
        pattern = [t.text for t in bare(key)]
        for cut in range(1, len(pattern)):
            pair = "".join(pattern[:cut]) + " " + "".join(pattern[cut:])
            built += [pair, f"x {pair}\ny", *(pair + other for other in keys[:12]), *(other + pair for other in keys[:12])]
        # cut twice: a match across three chunks ("(._.):’ - )") shadows a special case in the last
        for first in range(1, len(pattern)):
            for second in range(first + 1, len(pattern)):
                triple = f"{''.join(pattern[:first])} {''.join(pattern[first:second])} {''.join(pattern[second:])}"
                built += [triple, *(triple + other for other in keys[:12])]
    naive_differs = 0
    for text in built:
        want = base.word_tokenize(text)
        assert fast.word_tokenize(text) == want, text
        naive_differs += [w for c in text.split() for w in base.word_tokenize(c)] != want
    assert naive_differs > 0  # the case is real: chunk by chunk alone would get these wrong
    assert fast.segments > 0


def test_affix_regexes_are_skipped_only_where_they_cannot_match(texts):
    """The gates read from a pattern's parse tree say "no match" only where the call finds none:
    on spaCy's own affix patterns over every chunk of real text, and on patterns built to hold
    lookbehinds, case-insensitive groups, repeats, unanchored and empty-matching alternatives."""
    import random
    import re

    from curate.scorers.affix_regex import affix_gate

    tok = _splitter("en").nlp.tokenizer
    chunks = sorted({c for t in texts for c in t.split()})
    gates = {"start": affix_gate(tok.prefix_search, "start"), "end": affix_gate(tok.suffix_search, "end"),
             "any": affix_gate(tok.infix_finditer, "any")}
    assert all(gates.values())  # spaCy's English patterns are all read
    calls = {"start": tok.find_prefix, "end": tok.find_suffix, "any": tok.find_infix}
    skipped = dict.fromkeys(gates, 0)
    for where, gate in gates.items():
        for chunk in chunks:
            if not gate(chunk):
                assert not calls[where](chunk), (where, chunk)
                skipped[where] += 1
    assert min(skipped.values()) > len(chunks) // 10  # the gates do skip calls
    built = [r"^(?:ab|(?i:c)d?|\d+x)", r"(?<=[0-9])km$|'s$|\.\.+$|(?:x|y)z*$", r"(?<=a)[-,](?=b)|q+",
             r"x*", r"(?:ab|c)+\Z", r"(a)\1|[^a-c]", r"\w\.$|\S{3}"]
    alphabet = "abcdxyzkmq-,.'3 AC"
    rng = random.Random(0)
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(3000)]
    for source in built:
        pattern = re.compile(source)
        for where, fn in (("start", pattern.search), ("end", pattern.search), ("any", pattern.finditer)):
            gate = affix_gate(fn, where)
            if gate is None:  # an empty infix match splits too: never skipped
                assert where == "any" and pattern.match("") is not None
                continue
            for s in strings:
                found = [m for m in pattern.finditer(s) if m.end() > m.start()] if where == "any" else \
                    [m for m in [pattern.search(s)] if m and m.end() > m.start()]
                assert gate(s) or not found, (source, where, s)


def test_narrowed_affix_search_finds_what_the_whole_pattern_finds(texts):
    """`affix_finder` (only the alternatives that can begin / end with the string's first / last
    character) gives spaCy's find_prefix / find_suffix exactly: on spaCy's own patterns over every
    chunk of real text and its chunks less one character, and on built patterns holding "|" in
    classes and escapes, lookbehinds, global and local case-insensitivity, repeats and an
    empty-matching alternative; a pattern with an unanchored alternative is not read."""
    import random
    import re

    from curate.scorers.affix_regex import affix_finder

    tok = _splitter("en").nlp.tokenizer
    chunks = sorted({c for t in texts for c in t.split()})
    finders = {"start": affix_finder(tok.prefix_search, "start"), "end": affix_finder(tok.suffix_search, "end")}
    assert all(finders.values())  # spaCy's English patterns are read
    calls = {"start": tok.find_prefix, "end": tok.find_suffix}
    for where, find in finders.items():
        matched = 0
        for chunk in chunks:
            for s in (chunk, chunk[1:], chunk[:-1]):
                want = calls[where](s)
                assert find(s) == want, (where, s)
                matched += want > 0
        assert matched > 100  # the patterns do match: the comparison is not of zeros
    built = {"start": [r"^(?:ab|(?i:c)d?|\d+x)|^a|^[|]x|^\(a\||^[]a]b"],
             "end": [r"(?<=[0-9])km$|'s$|\.\.+$|(?:x|y)z*$|[|a]$|x*$", r"(?i)a$|b\.$|(?<![0-9])m$"]}
    alphabet = "abcdxyzkmq-,.'3 AC|()]B"
    rng = random.Random(0)
    strings = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 7))) for _ in range(3000)]
    strings += [s + "\n" for s in strings[:300]]  # `$` matches before a final newline too
    for where, sources in built.items():
        for source in sources:
            pattern = re.compile(source)
            find = affix_finder(pattern.search, where)
            assert find is not None, source
            for s in strings:
                m = pattern.search(s)
                assert find(s) == (m.end() - m.start() if m else 0), (source, s)
    assert affix_finder(re.compile(r"a$|b").search, "end") is None
    assert affix_finder(re.compile(r"^a|b").search, "start") is None


def test_arrow_grouping_equals_numpy_grouping(monkeypatch):
    """n-gram keys are grouped by numpy's sort below a size and by Arrow's hashing above it."""
    import numpy as np

    import curate.scorers.ngram_repeats as ngrams

    rng = np.random.default_rng(0)
    for size in (1, 5, 300, 5000):
        keys = rng.integers(0, max(2, size // 3), size) * 1_000_003
        monkeypatch.setattr(ngrams, "HASH_GROUPS_FROM", 10**9)
        first, sizes, group = ngrams.groups_of(keys)
        monkeypatch.setattr(ngrams, "HASH_GROUPS_FROM", 0)
        first2, sizes2, group2 = ngrams.groups_of(keys)
        assert (first[group] == first2[group2]).all() and (sizes[group] == sizes2[group2]).all()
        assert sorted(first.tolist()) == sorted(first2.tolist())
        assert (first[group] <= np.arange(size)).all() and (keys[first[group]] == keys).all()


def test_distinct_words_in_order_of_first_occurrence(texts):
    for text in texts[:20]:
        feats = _features(text)
        assert feats.distinct == list(dict.fromkeys(feats.words))
        assert [feats.distinct[i] for i in feats.word_ids] == feats.words


def test_alpha_pattern_is_exactly_isalpha():
    pattern = alpha_pattern()
    chars = "".join(map(chr, range(0x110000)))
    assert "".join(pattern.findall(chars)) == "".join(c for c in chars if c.isalpha())


def _features(text: str, lang: str = "en") -> DocFeatures:
    return DocFeatures(text, _tokenizer(lang).word_tokenize)


def test_repetition_quantities_equal_datatrove(texts):
    from datatrove.pipeline.filters import gopher_repetition_filter as g

    # "".join n-grams that are equal strings from different words, and a repeat inside a repeat
    built = ["ab c d ab cd ab c d e ab c d e", "ab c x a bc y ab c z a bc", " ".join(["a b a b a"] * 6), "x y z " * 30]
    for text in texts + built:
        feats = _features(text)
        words = feats.words
        for items in (feats.paragraphs, feats.lines, re.split(r"\n+", text)):
            assert find_duplicates(items) == g.find_duplicates(items)
        for n in range(1, 11):
            grams = g.get_n_grams(words, n)
            assert top_ngram_chars(feats, n) == (g.find_top_duplicate(grams) if grams else None)
            want = g.find_all_duplicate(words, n)
            # the scan's count, read through the threshold test: passes at want - 1, not at want
            assert dup_ngram_exceeds(feats, n, lambda c, w=want: c > w) is False
            if want:
                assert dup_ngram_exceeds(feats, n, lambda c, w=want: c > w - 1) is True
    # "ab c" and "a bc" are one string: numbered word n-grams would miss that, and are not used
    feats = _features(built[1])
    assert string_firsts(feats, 2) is None
    assert string_firsts(feats, 3) is not None


PARAMS = {
    "gopher_repetition": [{}, {"dup_line_frac": 0.05, "dup_para_frac": None},
                          {"top_n_grams": [[1, 0.05], [2, 0.02]], "dup_n_grams": [[3, 0.01], [5, 0.02]]},
                          {"dup_line_frac": None, "dup_para_frac": None, "dup_line_char_frac": None,
                           "dup_para_char_frac": None, "top_n_grams": [], "dup_n_grams": [[4, 0.0], [6, 0.05]]}],
    "gopher_quality": [{}, {"min_doc_words": 5, "min_stop_words": None}, {"min_doc_words": None, "max_doc_words": 300},
                       {"min_doc_words": 10, "max_non_alpha_words_ratio": 0.95, "max_avg_word_length": 5},
                       {"min_doc_words": 10, "max_symbol_word_ratio": 0.001, "max_bullet_lines_ratio": 0.01}],
}


@pytest.mark.parametrize("name", list(PARAMS))
def test_restated_rules_decide_as_datatrove(texts, name):
    from datatrove.data import Document

    from curate.scorers.heuristics import FILTER_CLASSES, _tokenizer_for

    module, cls = FILTER_CLASSES[name]
    filter_cls = getattr(__import__(module, fromlist=[cls]), cls)
    tok = _tokenizer_for("en")
    reasons = set()
    for params in PARAMS[name]:
        filt = filter_cls(language=tok, **params)
        rule = fast_rule(filt)
        assert rule is not None
        for text in texts:
            try:
                res = filter_cls(**params).filter(Document(text=text, id=""))
                want = None if res is True else res[1]
            except ZeroDivisionError:
                want = "ZeroDivisionError"
            try:
                got = rule(filt, DocFeatures(text, tok.word_tokenize))
            except ZeroDivisionError:
                got = "ZeroDivisionError"
            assert got == want, (params, text[:200])
            reasons.add(got)
    assert len(reasons) >= 4  # keeps and several rules, on this text


def _reference_signals(text: str, words: list[str]) -> dict:
    """The signals as first written, from datatrove's own functions."""
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


def test_signals_equal_datatrove_definitions(texts):
    for text in texts:
        feats = _features(text)
        assert signals(feats) == _reference_signals(text, _tokenizer("en").word_tokenize(text))


def test_a_full_memo_starts_afresh_and_splits_the_same(texts, monkeypatch):
    import curate.scorers.wordsplit as ws

    monkeypatch.setattr(ws, "_MEMO_MAX", 200)
    base, fast = _tokenizer("en"), ws.fast_word_splitter(_tokenizer("en"))
    assert [fast.word_tokenize(t) for t in texts[:20]] == [base.word_tokenize(t) for t in texts[:20]]
    assert len(fast._words) <= 200 + max(len(set(t.split())) for t in texts[:20])
