"""datatrove's spaCy word split, computed per whitespace-delimited chunk with a memo.

datatrove splits a document's words with a blank spaCy pipeline (`SpaCyTokenizer.word_tokenize`:
token texts, stripped, empty ones dropped), which ran at ~0.6 MB/s per core: spaCy builds a `Doc`
and a Python `Token` per word, and its own cache does not outlive the memory zone datatrove opens
per document. This module gives the same words faster, by following what spaCy's `Tokenizer`
does (spacy/tokenizer.pyx, `__call__`):

1. `_tokenize_affixes` cuts the text into maximal runs of whitespace and of non-whitespace
   (`str.isspace`, exactly what `str.split()` uses) and tokenizes each run from its string alone
   (the result is cached by the run's hash): a chunk's tokens do not depend on its neighbours.
   Whitespace runs become whitespace tokens (or a token's trailing-space flag), which
   `strip_strings` removes.
2. `_apply_special_cases` then runs a PhraseMatcher of the special cases over the whole `Doc`,
   replaces a match only when its text is a special case, and lets a longer match shadow an
   overlapping one. A match inside one chunk is found the same way when the chunk is tokenized
   alone; a match across chunks is the one thing a per-chunk split would miss.

So the words of a text are the concatenation of each chunk's words (spaCy run on the chunk alone,
remembered), unless some special case could match across a chunk boundary: its tokens' texts
concatenate to the special case's string, so a chunk must end with a non-empty proper prefix of
a special case and the next chunk start with that case's next character. Documents where that
happens anywhere (or with spaCy's `IS_ALPHA` quirk, which datatrove works around by rewriting the
text) are split by datatrove itself. tests/test_heuristics_fast.py checks the identity on real text
and on texts built from every special case cut at its token boundaries.

Speed, with the same words:

3. A chunk's affix regexes run only where they can match. spaCy's prefix, suffix and infix
   patterns are read (their parse tree, `re._parser`) for the characters a non-empty match can
   begin with (prefix, infix) or end with (suffix); where the prefix pattern is anchored at the
   start and the suffix pattern at the end, a chunk whose first / last character is none of
   those, or holding none of the infix characters, gets the answer the call would give (no
   prefix, no suffix, no infix) without the call. Where a chunk's first / last character can
   begin / end a match, only the prefix / suffix alternatives that can are searched
   (`scorers/affix_regex.py`): spaCy's suffix pattern, ~100 alternatives tried at every
   position, cost ~10 us a call, and a chunk ending in a letter needs the few that end in one.
   A pattern the reading does not understand is always called whole.
4. A known text is joined with one `split` per line and dictionary look-ups mapped in C; only a
   line holding a chunk after which a special case might continue is looked at word by word.
"""

from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate, chain, compress, count, repeat
from typing import Any

from curate.scorers.affix_regex import affix_finder, affix_gate

_MEMO_MAX = 1 << 18  # chunks remembered per language before the memo starts afresh (~60 MB)


def fast_word_splitter(base: Any):
    """A `SpacyChunkWords` for datatrove tokenizer `base` when the identity above holds for it
    (a datatrove `SpaCyTokenizer`, or its whitespace fallback, over spaCy's rule-based
    `Tokenizer`), else None."""
    from datatrove.utils.word_tokenizers import SpaCyTokenizer, WhitespaceTokenizer
    from spacy.tokenizer import Tokenizer

    if type(base) is WhitespaceTokenizer:
        base = base._spacy_xx
    # Japanese is cut into byte chunks and Chinese / Vietnamese segment with other libraries.
    if type(base) is not SpaCyTokenizer or base.language in ("ja", "zh", "vi") or base.config is not None:
        return None
    if type(base.tokenizer.tokenizer) is not Tokenizer:
        return None
    return SpacyChunkWords(base)


def _special_case_tables(nlp: Any) -> tuple[dict, dict, dict]:
    """From a spaCy pipeline's special cases: (first token -> the multi-token patterns that start
    with it, text before a cut -> characters after it, tokens before a cut -> characters after it).
    A special case's PhraseMatcher pattern is its string split by the affix rules alone
    (`add_special_case`), so a match can cross a chunk boundary only between two of those tokens."""
    from spacy.tokenizer import Tokenizer

    tok = nlp.tokenizer
    bare = Tokenizer(nlp.vocab, rules={}, prefix_search=tok.prefix_search, suffix_search=tok.suffix_search,
                     infix_finditer=tok.infix_finditer, token_match=tok.token_match, url_match=tok.url_match)
    patterns: dict[str, list[tuple[str, ...]]] = {}
    by_text: dict[str, set[str]] = {}
    by_tokens: dict[tuple[str, ...], set[str]] = {}
    with nlp.memory_zone():
        for key in tok.rules:
            pattern = tuple(t.text for t in bare(key))
            if len(pattern) > 1:
                patterns.setdefault(pattern[0], []).append(pattern)
            for cut in range(1, len(pattern)):
                by_text.setdefault("".join(pattern[:cut]), set()).add(pattern[cut][0])
                by_tokens.setdefault(pattern[:cut], set()).add(pattern[cut][0])
    return (patterns, {u: frozenset(c) for u, c in by_text.items()},
            {u: frozenset(c) for u, c in by_tokens.items()})


def _gated(find: Any, search: Any, where: str) -> Any:
    """spaCy's `find_prefix` / `find_suffix`, called only where `affix_gate` allows a match."""
    gate = affix_gate(search, where)
    return find if gate is None else (lambda s: find(s) if gate(s) else 0)


class SpacyChunkWords:
    """`word_tokenize(text)` equal to datatrove `SpaCyTokenizer.word_tokenize(text)` (see module
    docstring for why), at dictionary-lookup cost per chunk once a chunk has been seen."""

    def __init__(self, base: Any):
        self.base = base
        self.nlp = base.tokenizer
        tok = self.nlp.tokenizer
        self._patterns, self._next_after, self._next_tokens = _special_case_tables(self.nlp)
        self._longest = max(map(len, self._next_after), default=0)
        self._token_cut = max(map(len, self._next_tokens), default=0)
        self._last_tokens = frozenset(cut[-1] for cut in self._next_tokens)  # a chunk ending otherwise continues none
        from spacy.attrs import ORTH

        self._rules = {key: [t[ORTH] for t in subs] for key, subs in tok.rules.items()}  # special case -> words
        self._find_prefix = affix_finder(tok.prefix_search, "start") or _gated(tok.find_prefix, tok.prefix_search, "start")
        self._find_suffix = affix_finder(tok.suffix_search, "end") or _gated(tok.find_suffix, tok.suffix_search, "end")
        self._may_infix = affix_gate(tok.infix_finditer, "any") or (lambda s: True)
        self._words: dict[str, tuple[str, ...]] = {}  # chunk (or segment, which holds a space) -> its words
        self._affixes: dict[str, tuple[str, ...]] = {}  # chunk or what its affix loop left -> its tokens
        self._nexts: dict[str, frozenset] = {}  # chunk -> characters that would continue a special case
        self.segments = 0  # chunk runs split together (a special case might cross them)

    def _learn(self, chunks: list[str]) -> None:
        last_tokens, next_tokens = self._last_tokens, self._next_tokens
        with self.nlp.memory_zone():
            for chunk in chunks:
                tokens = self._affix_split(chunk)  # the tokens the matcher reads (in any context)
                words = tokens
                if len(tokens) > 1 and self._may_match(tokens):
                    words = [t.text.strip() for t in self.nlp.tokenizer(chunk)]
                self._words[chunk] = tuple(filter(None, words))
                if tokens and tokens[-1] in last_tokens:
                    nexts: frozenset = frozenset()
                    for cut in range(1, min(len(tokens), self._token_cut) + 1):
                        nexts |= next_tokens.get(tuple(tokens[-cut:]), nexts)
                    if nexts:
                        self._nexts[chunk] = nexts

    def _continuations(self, text: str) -> frozenset:
        """Characters that would continue a special case begun by a string ending `text`."""
        nexts: frozenset = frozenset()
        for cut in range(1, min(len(text), self._longest) + 1):
            nexts |= self._next_after.get(text[-cut:], nexts)
        return nexts

    def _affix_split(self, chunk: str) -> list[str]:
        """spaCy's `_tokenize` of one chunk (`_split_affixes`, then `_attach_tokens`), step for
        step with the tokenizer's own `find_*` and special cases, without building a `Doc`: the
        tokens the PhraseMatcher then reads (`_learn` leaves to spaCy a chunk where it may match).
        Each round of the affix loop reads only the string it is left with, so what follows from
        a string is remembered ("word" is left of "word," and "(word").)"""
        memo = self._affixes
        string, prefixes, suffixes = chunk, [], []
        states: list[tuple[str, int, int]] = []
        while (middle := memo.get(string)) is None:
            states.append((string, len(prefixes), len(suffixes)))
            step = self._strip(string)
            if step is None:
                middle = self._core(string)
                break
            prefix, string, suffix = step
            if prefix:
                prefixes.append(prefix)
            if suffix:
                suffixes.append(suffix)
        for state, done_prefixes, done_suffixes in states:
            memo[state] = (*prefixes[done_prefixes:], *middle, *reversed(suffixes[done_suffixes:]))
        return [*prefixes, *middle, *reversed(suffixes)]

    def _strip(self, string: str) -> tuple[str, str, str] | None:
        """One round of `_split_affixes`: (prefix, what is left, suffix), "" for an affix not
        taken; None where the loop stops at `string`."""
        rules, token_match = self._rules, self.nlp.tokenizer.token_match
        if not string or (token_match and token_match(string)) or string in rules:
            return None
        pre_len = self._find_prefix(string)
        if pre_len != 0:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in rules:
                return prefix, minus_pre, ""
        suf_len = self._find_suffix(string[pre_len:])
        if suf_len != 0:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in rules:
                return "", minus_suf, suffix
        if pre_len and suf_len and (pre_len + suf_len) <= len(string):
            return prefix, string[pre_len:-suf_len], suffix
        if pre_len:
            return prefix, minus_pre, ""
        if suf_len:
            return "", minus_suf, suffix
        return None

    def _core(self, string: str) -> tuple[str, ...]:
        """`_attach_tokens` on what the affix loop leaves: a special case's words, the string
        whole, or the string cut at its infixes."""
        tok, rules = self.nlp.tokenizer, self._rules
        if not string:
            return ()
        if string in rules:
            return tuple(rules[string])
        if not self._may_infix(string):  # then a token or URL match also leaves it whole
            return (string,)
        if (tok.token_match and tok.token_match(string)) or (tok.url_match and tok.url_match(string)):
            return (string,)
        tokens: list[str] = []
        start = start_before_infixes = 0
        for match in tok.find_infix(string) or ():
            infix_start, infix_end = match.start(), match.end()
            if infix_start == start_before_infixes:
                continue
            if infix_start != start:
                tokens.append(string[start:infix_start])
            if infix_start != infix_end:
                tokens.append(string[infix_start:infix_end])
            start = infix_end
        if string[start:]:
            tokens.append(string[start:])
        return tuple(tokens)

    def _may_match(self, tokens: list[str]) -> bool:
        """Whether some special case's pattern occurs in `tokens` (the PhraseMatcher's test)."""
        patterns = self._patterns
        if patterns.keys().isdisjoint(tokens):  # most chunks: no token starts a pattern (one pass in C)
            return False
        for i, token in enumerate(tokens):
            for pattern in patterns.get(token, ()):
                if tuple(tokens[i:i + len(pattern)]) == pattern:
                    return True
        return False

    def word_tokenize(self, text: str) -> list[str]:
        if "IS_ALPHA" in text:
            return self.base.word_tokenize(text)
        chunks = text.split()
        try:
            known = list(map(self._words.__getitem__, chunks))
        except KeyError:  # chunks not seen yet: learn them all, then look up again
            self._learn_missing(chunks)
            known = list(map(self._words.__getitem__, chunks))
        # chunk i's continuations hold chunk i+1's first character (a fifth of chunks have some)
        nexts, last = self._nexts, len(chunks) - 1
        follows = [i for i in compress(count(), map(nexts.__contains__, chunks))
                   if i < last and chunks[i + 1][0] in nexts[chunks[i]]]
        if not follows:
            return list(chain.from_iterable(known))
        lines = text.split("\n")
        ends = list(accumulate(map(len, map(str.split, lines))))  # chunks up to the end of each line
        # Chunks on different lines have a newline between them: only boundaries within a line count.
        risky = sorted({line for line, i in zip(map(bisect_right, repeat(ends), follows), follows)
                        if i + 1 < ends[line]})
        words: list[str] = []
        done = 0
        for line in risky:
            words += chain.from_iterable(known[done:ends[line - 1] if line else 0])
            words += self._by_segments(lines[line])
            done = ends[line]
        words += chain.from_iterable(known[done:])
        return words

    def _learn_missing(self, chunks: list[str]) -> None:
        missing = [c for c in dict.fromkeys(chunks) if c not in self._words]
        if len(self._words) + len(missing) > _MEMO_MAX:
            self._words.clear()
            self._nexts.clear()
            self._affixes.clear()
            missing = list(dict.fromkeys(chunks))
        if missing:
            self._learn(missing)

    def _by_segments(self, text: str) -> list[str]:
        """Words of a text with boundaries a special case might cross: chunks joined by such a
        boundary (and one plain space: any other whitespace leaves a whitespace token between
        them, which no multi-token pattern holds) are split together by spaCy, as one segment.
        A match never spans two segments, so each segment splits as it does within the text."""
        words: list[str] = []
        segment: list[tuple[int, int]] = []  # (start, end) of the chunks of the open segment
        risky: frozenset = frozenset()
        tail = ""  # the segment's last characters, spaces left out (the matcher reads tokens)
        pos = 0
        for chunk in text.split():
            start = text.find(chunk, pos)  # only whitespace lies between pos and the chunk
            pos = start + len(chunk)
            if chunk[0] in risky and text[segment[-1][1]:start] == " ":
                # a special case begun before this chunk may go on past it: "(._.):’ - )"
                tail = (tail + chunk)[-self._longest:]
                risky = self._continuations(tail)
            else:
                words += self._segment_words(text, segment)
                segment, tail = [], chunk[-self._longest:]
                risky = self._nexts.get(chunk, frozenset())
            segment.append((start, pos))
        return words + self._segment_words(text, segment)

    def _segment_words(self, text: str, segment: list[tuple[int, int]]) -> list[str]:
        if not segment:
            return []
        piece = text[segment[0][0]:segment[-1][1]]
        known = self._words.get(piece)  # a chunk, or a segment seen before (it holds a space)
        if known is None:
            self.segments += 1
            with self.nlp.memory_zone():
                words = [t.text.strip() for t in self.nlp.tokenizer(piece)]
            known = self._words[piece] = tuple(filter(None, words))
        return list(known)
