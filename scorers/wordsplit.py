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
"""

from __future__ import annotations

from typing import Any

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


class SpacyChunkWords:
    """`word_tokenize(text)` equal to datatrove `SpaCyTokenizer.word_tokenize(text)` (see module
    docstring for why), at dictionary-lookup cost per chunk once a chunk has been seen."""

    def __init__(self, base: Any):
        self.base = base
        self.nlp = base.tokenizer
        # A special case's PhraseMatcher pattern is its string split by the affix rules alone
        # (`add_special_case`); a match can cross a chunk boundary only between two of those
        # tokens. Its text before such a cut -> the characters that follow the cut.
        from spacy.tokenizer import Tokenizer

        tok = self.nlp.tokenizer
        bare = Tokenizer(self.nlp.vocab, rules={}, prefix_search=tok.prefix_search, suffix_search=tok.suffix_search,
                         infix_finditer=tok.infix_finditer, token_match=tok.token_match, url_match=tok.url_match)
        self._next_after: dict[str, Any] = {}
        # first token of a multi-token pattern -> the patterns (the matcher's, and more)
        self._patterns: dict[str, list[tuple[str, ...]]] = {}
        with self.nlp.memory_zone():
            for key in tok.rules:
                pattern = [t.text for t in bare(key)]
                if len(pattern) > 1:
                    self._patterns.setdefault(pattern[0], []).append(tuple(pattern))
                for cut in range(1, len(pattern)):
                    self._next_after.setdefault("".join(pattern[:cut]), set()).add(pattern[cut][0])
        self._next_after = {u: frozenset(chars) for u, chars in self._next_after.items()}
        self._longest = max(map(len, self._next_after), default=0)
        from spacy.attrs import ORTH

        self._rules = {key: [t[ORTH] for t in subs] for key, subs in tok.rules.items()}  # special case -> words
        # chunk -> (words, chars that would continue a special case from its end, or None)
        self._memo: dict[str, tuple[list[str], frozenset | None]] = {}
        self.segments = 0  # chunk runs split together (a special case might cross them)

    def _learn(self, chunks: list[str]) -> None:
        next_after = self._next_after
        with self.nlp.memory_zone():
            for chunk in chunks:
                words = self._affix_split(chunk)
                if len(words) > 1 and self._may_match(words):
                    words = [t.text.strip() for t in self.nlp.tokenizer(chunk)]
                words = [w for w in words if w]
                nexts: frozenset | None = None
                for cut in range(1, min(len(chunk), self._longest) + 1):
                    after = next_after.get(chunk[-cut:])
                    if after is not None:
                        nexts = after if nexts is None else nexts | after
                self._memo[chunk] = (words, nexts)

    def _affix_split(self, string: str) -> list[str]:
        """spaCy's `_tokenize` of one chunk (`_split_affixes`, then `_attach_tokens`), step for
        step with the tokenizer's own `find_*` and special cases, without building a `Doc`: the
        tokens the PhraseMatcher then reads (`_learn` leaves to spaCy a chunk where it may match)."""
        tok, rules = self.nlp.tokenizer, self._rules
        if string in rules:
            return list(rules[string])
        prefixes: list[str] = []
        suffixes: list[str] = []
        last_size = 0
        while string and len(string) != last_size:
            if tok.token_match and tok.token_match(string):
                break
            if string in rules:
                break
            last_size = len(string)
            pre_len = tok.find_prefix(string)
            if pre_len != 0:
                prefix, minus_pre = string[:pre_len], string[pre_len:]
                if minus_pre and minus_pre in rules:
                    string = minus_pre
                    prefixes.append(prefix)
                    break
            suf_len = tok.find_suffix(string[pre_len:])
            if suf_len != 0:
                suffix, minus_suf = string[-suf_len:], string[:-suf_len]
                if minus_suf and minus_suf in rules:
                    string = minus_suf
                    suffixes.append(suffix)
                    break
            if pre_len and suf_len and (pre_len + suf_len) <= len(string):
                string = string[pre_len:-suf_len]
                prefixes.append(prefix)
                suffixes.append(suffix)
            elif pre_len:
                string = minus_pre
                prefixes.append(prefix)
            elif suf_len:
                string = minus_suf
                suffixes.append(suffix)
        tokens = prefixes
        if string:
            if string in rules:
                tokens += rules[string]
            elif (tok.token_match and tok.token_match(string)) or (tok.url_match and tok.url_match(string)):
                tokens.append(string)
            else:
                matches = tok.find_infix(string)
                if not matches:
                    tokens.append(string)
                else:
                    start = start_before_infixes = 0
                    for match in matches:
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
        tokens += reversed(suffixes)
        return tokens

    def _may_match(self, tokens: list[str]) -> bool:
        """Whether some special case's pattern occurs in `tokens` (the PhraseMatcher's test)."""
        patterns = self._patterns
        for i, token in enumerate(tokens):
            for pattern in patterns.get(token, ()):
                if tuple(tokens[i:i + len(pattern)]) == pattern:
                    return True
        return False

    def word_tokenize(self, text: str) -> list[str]:
        if "IS_ALPHA" in text:
            return self.base.word_tokenize(text)
        try:
            return self._join(text)
        except KeyError:  # chunks not seen yet: learn them all, then join again
            self._learn_missing(text.split())
            return self._join(text)

    def _learn_missing(self, chunks: list[str]) -> None:
        memo = self._memo
        missing = [c for c in dict.fromkeys(chunks) if c not in memo]
        if len(memo) + len(missing) > _MEMO_MAX:
            memo.clear()
            missing = list(dict.fromkeys(chunks))
        if missing:
            self._learn(missing)

    def _join(self, text: str) -> list[str]:
        """The chunks' words in order (KeyError on a chunk not learnt yet). Chunks on different
        lines have a newline between them, so only boundaries within a line can be crossed by a
        special case; a line where one might be is split by segments."""
        memo = self._memo
        words: list[str] = []
        for line in text.split("\n"):
            risky: frozenset | None = None
            line_start = len(words)
            for chunk in line.split():
                chunk_words, nexts = memo[chunk]
                if risky is not None and chunk[0] in risky:
                    del words[line_start:]
                    words += self._by_segments(line)
                    break
                risky = nexts
                words += chunk_words
        return words

    def _by_segments(self, text: str) -> list[str]:
        """Words of a text with boundaries a special case might cross: chunks joined by such a
        boundary (and one plain space: any other whitespace leaves a whitespace token between
        them, which no multi-token pattern holds) are split together by spaCy, as one segment.
        A match never spans two segments, so each segment splits as it does within the text."""
        memo = self._memo
        words: list[str] = []
        segment: list[tuple[int, int]] = []  # (start, end) of the chunks of the open segment
        risky: frozenset | None = None
        pos = 0
        for chunk in text.split():
            start = text.find(chunk, pos)  # only whitespace lies between pos and the chunk
            pos = start + len(chunk)
            if not (risky is not None and chunk[0] in risky and text[segment[-1][1]:start] == " "):
                words += self._segment_words(text, segment)
                segment = []
            segment.append((start, pos))
            risky = memo[chunk][1]
        return words + self._segment_words(text, segment)

    def _segment_words(self, text: str, segment: list[tuple[int, int]]) -> list[str]:
        if not segment:
            return []
        piece = text[segment[0][0]:segment[-1][1]]
        known = self._memo.get(piece)  # a chunk, or a segment seen before (it holds a space)
        if known is None:
            self.segments += 1
            with self.nlp.memory_zone():
                words = [t.text.strip() for t in self.nlp.tokenizer(piece)]
            known = self._memo[piece] = ([w for w in words if w], None)
        return list(known[0])
