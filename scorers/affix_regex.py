"""Reading spaCy's affix regexes: where a match can begin or end, and the search narrowed to the
alternatives that can match there (scorers/wordsplit.py calls spaCy's `find_prefix`,
`find_suffix` and `find_infix` through these).

- `affix_gate`: a test false only where the call cannot find a non-empty match: from each
  pattern's parse tree (`re._parser`), the characters a non-empty match can begin (prefix,
  infix) or end (suffix) with.
- `affix_finder`: `find_prefix` / `find_suffix` themselves for a pattern whose every top-level
  alternative is anchored at the start / end (spaCy joins its prefixes as `^piece|^piece...`, its
  suffixes as `piece$|piece$...`): only the alternatives that can begin (end) with the string's
  first (last) character are searched, in their order, in one pattern compiled per such set. Every
  match of an end-anchored pattern ends at the string's end, so the leftmost one the narrowed
  pattern finds is the whole pattern's; a start-anchored pattern matches at 0 only, where the
  first alternative in order that matches wins in both. spaCy's suffix pattern has ~100
  alternatives tried at every position; a chunk ending in a letter needs the two or three that
  end in one.

A pattern the reading does not understand gets None, and the caller makes the call itself.
"""

from __future__ import annotations

import re
from typing import Any, Callable


def _regex_tree(source: str, flags: int):
    from re import _parser  # the stdlib's own reading of a pattern (sre_parse before 3.11)

    return _parser.parse(source, flags)


_NOT_READ = (ImportError, AttributeError, re.error, RecursionError)  # the reading's own failures, besides _Unread


class _Unread(Exception):
    """A pattern construct whose first / last characters are not worked out here."""


def _char_class(op: Any, av: Any) -> tuple[str, str]:
    """One-character pattern item as ("body", class body) or ("pattern", a pattern)."""
    from re import _constants as c

    if op == c.LITERAL:
        return "body", re.escape(chr(av))
    if op == c.NOT_LITERAL:
        return "pattern", f"[^{re.escape(chr(av))}]"
    if op == c.ANY:
        return "pattern", "(?s:.)"
    categories = {c.CATEGORY_DIGIT: r"\d", c.CATEGORY_NOT_DIGIT: r"\D", c.CATEGORY_SPACE: r"\s",
                  c.CATEGORY_NOT_SPACE: r"\S", c.CATEGORY_WORD: r"\w", c.CATEGORY_NOT_WORD: r"\W"}
    negate, parts = False, []
    for item, value in av:  # op is IN
        if item == c.NEGATE:
            negate = True
        elif item == c.LITERAL:
            parts.append(re.escape(chr(value)))
        elif item == c.RANGE:
            parts.append(f"{re.escape(chr(value[0]))}-{re.escape(chr(value[1]))}")
        elif item == c.CATEGORY and value in categories:
            parts.append(categories[value])
        else:
            raise _Unread(item)
    if negate:
        return "pattern", f"[^{''.join(parts)}]" if parts else "(?s:.)"
    return "body", "".join(parts)


def _edge_chars(seq: Any, last: bool) -> tuple[list[tuple[str, str]], bool]:
    """The one-character patterns (`_char_class`) one of which every non-empty match of `seq`
    begins with (`last`: ends with), a superset, and whether `seq` can match the empty string."""
    from re import _constants as c

    found: list[tuple[str, str]] = []
    for op, av in (reversed(seq.data) if last else seq.data):
        if op in (c.LITERAL, c.NOT_LITERAL, c.ANY, c.IN):
            return found + [_char_class(op, av)], False
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):  # zero-width: the character is further on
            continue
        if op == c.BRANCH:
            alternatives = [_edge_chars(alt, last) for alt in av[1]]
            found += [ch for chars, _ in alternatives for ch in chars]
            nullable = any(empty for _, empty in alternatives)
        elif op == c.SUBPATTERN:
            chars, nullable = _edge_chars(av[3], last)
            if av[1] & c.SRE_FLAG_IGNORECASE:  # a case-insensitive group: its characters in any case
                chars = [("pattern", f"(?i:[{text}])" if kind == "body" else f"(?i:{text})") for kind, text in chars]
            found += chars
        elif op == c.ATOMIC_GROUP:
            chars, nullable = _edge_chars(av, last)
            found += chars
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT):
            low, high, sub = av
            chars, nullable = _edge_chars(sub, last) if high else ([], True)
            found += chars
            nullable = nullable or low == 0
        elif op == c.GROUPREF:  # whatever the group matched, possibly nothing
            found.append(("pattern", "(?s:.)"))
            nullable = True
        else:
            raise _Unread(op)
        if not nullable:
            return found, False
    return found, True


def _anchored(seq: Any, last: bool) -> bool:
    """Whether every match of `seq` begins at the start of the string (`last`: ends at its end)."""
    from re import _constants as c

    anchors = (c.AT_END, c.AT_END_STRING) if last else (c.AT_BEGINNING, c.AT_BEGINNING_STRING)
    for op, av in (reversed(seq.data) if last else seq.data):
        if op == c.AT and av in anchors:
            return True
        if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
            continue
        if op == c.BRANCH:
            return all(_anchored(alt, last) for alt in av[1])
        if op == c.SUBPATTERN and not av[1] & c.SRE_FLAG_MULTILINE:
            return _anchored(av[3], last)
        return False
    return False


def _one_of(chars: list[tuple[str, str]], flags: int) -> re.Pattern:
    bodies = "".join(text for kind, text in chars if kind == "body")
    alternatives = ([f"[{bodies}]"] if bodies else []) + [text for kind, text in chars if kind == "pattern"]
    return re.compile("|".join(alternatives) or "(?!)", flags & re.IGNORECASE)


def affix_gate(fn: Any, where: str) -> Callable[[str], bool] | None:
    """For spaCy's `prefix_search` / `suffix_search` (`where` "start" / "end", a `search`) or
    `infix_finditer` ("any"): a test false only where the call cannot find a non-empty match,
    or None where that is not worked out (then the call is always made)."""
    pattern = getattr(fn, "__self__", None)
    if not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str) or pattern.flags & re.MULTILINE:
        return None
    try:
        tree = _regex_tree(pattern.pattern, pattern.flags)
        if where == "end" and _anchored(tree, True):
            test = _one_of(_edge_chars(tree, True)[0], pattern.flags)
            # `$` also matches before a final newline (chunks hold none)
            return lambda s: test.match(s, len(s) - 1) is not None or s.endswith("\n")
        chars, nullable = _edge_chars(tree, False)
    except (_Unread, *_NOT_READ):
        return None
    if where == "any" and nullable:  # empty infix matches split a chunk too
        return None
    test = _one_of(chars, pattern.flags)
    if where == "start" and _anchored(tree, False):
        return lambda s: test.match(s) is not None
    return lambda s: test.search(s) is not None  # a match may begin anywhere


def _alternatives(source: str) -> list[str]:
    """`source` cut at its top-level `|`: outside groups, character classes and escapes."""
    pieces, depth, start, i, in_class = [], 0, 0, 0, False
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if in_class:
            in_class = ch != "]"
        elif ch == "[":
            in_class = True
            i += 1 + source.startswith("^", i + 1)  # "]" first in a class (after "^") is literal
            i += source.startswith("]", i)
            continue
        elif ch in "()":
            depth += 1 if ch == "(" else -1
        elif ch == "|" and depth == 0:
            pieces.append(source[start:i])
            start = i + 1
        i += 1
    return pieces + [source[start:]]


def affix_finder(fn: Any, where: str) -> Callable[[str], int] | None:
    """spaCy's `find_prefix` (`where` "start") or `find_suffix` ("end") for the `search` method
    `fn` of a compiled pattern: the matched length, 0 for none (see the module docstring); None
    where the pattern is not read (then call spaCy's)."""
    pattern = getattr(fn, "__self__", None)
    if (not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str)
            or pattern.flags & (re.MULTILINE | re.VERBOSE)):
        return None
    last, flags = where == "end", pattern.flags
    pieces: list[tuple[str, re.Pattern | None]] = []  # (source, test of the edge character; None: any)
    try:
        for source in _alternatives(pattern.pattern):
            tree = _regex_tree(source, flags)
            if not _anchored(tree, last):
                return None
            chars, nullable = _edge_chars(tree, last)
            pieces.append((source, None if nullable else _one_of(chars, flags)))
    except (_Unread, *_NOT_READ):
        return None
    narrowed: dict[str, re.Pattern | None] = {}  # edge character -> the pattern of its alternatives
    by_set: dict[tuple[int, ...], re.Pattern] = {}

    def narrow(ch: str) -> re.Pattern | None:
        kept = tuple(i for i, (_, test) in enumerate(pieces) if test is None or test.match(ch))
        if kept and kept not in by_set:
            by_set[kept] = re.compile("|".join(pieces[i][0] for i in kept), flags)
        return by_set[kept] if kept else None

    def find(s: str) -> int:
        if not s or (last and s.endswith("\n")):  # `$` also matches before a final newline
            m = pattern.search(s)
            return m.end() - m.start() if m else 0
        ch = s[-1] if last else s[0]
        try:
            p = narrowed[ch]
        except KeyError:
            p = narrowed[ch] = narrow(ch)
        m = p.search(s) if p is not None else None
        return m.end() - m.start() if m else 0

    return find
