"""What a text is, from its form: content detectors for the domain stage.

Each detector reads only the head of a document (`HEAD_CHARS`) and answers whether it has the
structure of one kind of text: a Debian/GNU changelog, a man page (troff source or rendered, in
any language), reStructuredText, Markdown, AsciiDoc or HTML markup, source code, YAML/JSON/INI
configuration, licence or copyright text, a dictionary or glossary, a table. Prose is what none of
them claims. Names and URLs are never read: a corpus's own names say nothing to them.

`detect(text, names)` tries the detectors in `PRIORITY` order (most specific form first: a
changelog quotes code and a man page shows options, yet is a changelog or a man page) and
returns the first that matches. Every detector is a handful of regular expressions over at most
`HEAD_CHARS` characters, so their cost does not grow with the document and stays a small share
of the heuristics stage's (bench/bench_heuristics.py measures both).
"""

from __future__ import annotations

import re
from functools import cached_property
from itertools import islice
from typing import Callable, Sequence

HEAD_CHARS = 6000


class Head:
    """The first `HEAD_CHARS` characters of a text and its non-blank lines, computed once."""

    def __init__(self, text: str):
        self.text = text[:HEAD_CHARS]
        self._counts: dict[re.Pattern, tuple[int, int]] = {}  # pattern -> (matches, the limit they were counted to)

    @cached_property
    def lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip()]

    @cached_property
    def code_fraction(self) -> float:
        """`code_fraction` of the head (`legal` and `code` both read it)."""
        return code_fraction(self.text)

    def count(self, pattern: re.Pattern, limit: int = 1000) -> int:
        """Matches of `pattern`, counted up to `limit`. Detectors ask for the same pattern under
        several limits: a count that stopped short of its limit, or at a higher one, answers."""
        n, counted_to = self._counts.get(pattern, (0, 0))
        if counted_to >= limit or n < counted_to:
            return min(n, limit)
        n = sum(1 for _ in islice(pattern.finditer(self.text), limit))
        self._counts[pattern] = (n, limit)
        return n

    def share(self, pattern: re.Pattern) -> float:
        """Share of non-blank lines that `pattern` matches at their start."""
        lines = self.lines
        return _matching(pattern.match, lines) / len(lines) if lines else 0.0


def _matching(test: Callable, lines: Sequence[str]) -> int:
    """How many of `lines` `test` (a pattern's `match` or `search`) finds something in."""
    return len(lines) - list(map(test, lines)).count(None)


M = re.MULTILINE

# Debian changelog: "pkg (1.2-3) unstable; urgency=medium" and the " -- Name <mail>  date" trailer
# (deb-changelog(5)); `git log` output; GNU ChangeLog: "2023-01-31  Name  <mail>" entries (GNU Coding Standards 6.8.2).
_DEB_ENTRY = re.compile(r"^[a-z0-9][a-z0-9.+-]* \([^()\s]+\) [^;\n]+; *urgency=\w+", M)
_DEB_TRAILER = re.compile(r"^ -- [^<\n]+<[^>\n]+>  ?\w{3}, +\d", M)
_GNU_ENTRY = re.compile(r"^\s*(?:\d{4}-\d\d-\d\d|\w{3} \w{3} [ \d]\d [\d:]{8}(?: [A-Z]{3,4})? \d{4})\s+[^<(\n]+[<(][^>)\n]+@", M)
_GIT_LOG = re.compile(r"^commit [0-9a-f]{40}\b.*\n(?:Merge: .*\n)?Author: ", M)
_GNU_ITEM = re.compile(r"^\t\* \S", M)
# Release notes (NEWS, "Keep a Changelog", Python's changelog): version headings over item lists.
_RELEASE_HEAD = re.compile(r"^[*#=`\[ ]*(?:version |release |changes in |what'?s new in |noteworthy changes in "
                           r"|python |v)?\d+\.\d+(?:\.\d+)?[\w.-]*(?:`? *<[^>\n]*>`_*)?"
                           r"(?: ?\(|:| *$| final| release| -)",
                           M | re.IGNORECASE)
_ITEM = re.compile(r"^ {0,3}[-*+] +\S", M)
_CHANGE_ITEM = re.compile(r"^\s*(?:[-*+]|[a-z]{1,2}\.|\d+\.)\s+(?:Fixed|Fixes|Fix|Added|Removed|Changed|Updated|Improved|"
                          r"Deprecated|Dropped|New)\b", M)
_ISSUE_ITEM = re.compile(r"^\s*(?:[-*+] +)?(?:\[?(?:gh|bpo|issue|bug)[- #]?\d+|.*\((?:closes|lp): *#\d+)",
                         M | re.IGNORECASE)


def changelog(h: Head) -> bool:
    if h.count(_DEB_TRAILER, 1) and h.count(_DEB_ENTRY, 1) or _DEB_ENTRY.match(h.text) or h.count(_GIT_LOG, 2) >= 2:
        return True
    if h.count(_GNU_ENTRY, 2) >= 2 or (h.count(_GNU_ENTRY, 1) and h.count(_GNU_ITEM, 3) >= 3):
        return True
    if h.count(_ISSUE_ITEM, 5) >= 5 or h.count(_CHANGE_ITEM, 5) >= 5:  # entries naming an issue or a change
        return True
    if h.count(_RELEASE_HEAD, 2) < 2:
        return False
    return h.count(_ISSUE_ITEM, 3) >= 3 or h.count(_ITEM, 6) >= 6


# man: troff source (man(7) and mdoc(7) requests) or its rendering: a "LS(1) ... LS(1)" header, or
# section titles at the margin over bodies indented by 7 columns (man's layout whatever the
# language: NAME, BEZEICHNUNG, 名前, ...).
_TROFF = re.compile(r"^\.(?:TH|SH|Dd|Dt|Sh)\s", M)
_TROFF_BODY = re.compile(r"^\.(?:[A-Z][A-Za-z]?|sp|br|nf|fi|ft|in|ti|ie|el|de|if|nh|ad)\b", M)
_MAN_HEADER = re.compile(r"^([\w.:+-]+)\((\d\w*)\)\s{2,}.*?\s{2,}\1\(\2\)\s*$", M)
_MAN_SECTION = re.compile(r"^(\S[^\n]{0,38})\n {5,}\S", M)


def man(h: Head) -> bool:
    body = h.count(_TROFF_BODY)
    if (h.count(_TROFF, 1) and body >= 3) or (body >= 10 and body >= 0.15 * len(h.lines)):
        return True
    if h.count(_MAN_HEADER, 1):
        return True
    lines = h.lines
    if len(lines) < 6:
        return False
    indented = sum(ln.startswith("       ") for ln in lines) / len(lines)
    return indented >= 0.6 and h.count(_MAN_SECTION, 3) >= 3


# reStructuredText: titles over/underlined (a run of one punctuation character), directives
# (`.. note::`), targets, roles (:func:`x`), literal blocks introduced by `::`.
_RST_UNDERLINE = re.compile(r"^[^\s\n][^\n]*\n([=\-~^\"'`#*+])\1{2,}\s*$", M)
_RST_DIRECTIVE = re.compile(r"^\s*\.\. (?:[\w:-]+::|_[^:\n]+:|\|[^|\n]+\||\[[^\]\n]+\])", M)
_RST_ROLE = re.compile(r":[\w:-]+:`[^`\n]+`|``[^`\n]+``")
_RST_LITERAL = re.compile(r"::\s*$", M)


# A document that opens with a title underlined to its length: reST's (and Sphinx's rendered
# text's, as in pydoc's topics) first heading.
_RST_TITLE = re.compile(r"\s*(?:([=\-~^\"'`#*+])\1{2,}\n)?(?P<title>[^\n]{3,80})\n(?P<line>([=\-~^\"'`#*+])\4{2,})[ \t]*\n")


def rst(h: Head) -> bool:
    m = _RST_TITLE.match(h.text)
    if m and abs(len(m.group("title").rstrip()) - len(m.group("line"))) <= 2:
        return True
    directives = min(h.count(_RST_DIRECTIVE, 3), 3)
    if not directives and h.count(_MD_HEADING, 2) >= 2:  # Markdown's `#` headings: `markdown` decides
        return False
    score = 2 * min(h.count(_RST_UNDERLINE, 2), 2) + directives
    score += min(h.count(_RST_ROLE, 3), 3) + min(h.count(_RST_LITERAL, 2), 2)
    return score >= 4


_MD_HEADING = re.compile(r"^#{1,6} \S", M)
_MD_FENCE = re.compile(r"^\s*(?:```|~~~)", M)
_MD_LINK = re.compile(r"\[[^\]\n]+\]\((?:https?://|\.{0,2}/|#)[^)\s]*\)")
_MD_EMPH = re.compile(r"(?:\*\*|__)\S[^*\n]*\S(?:\*\*|__)|`[^`\n]+`")


def markdown(h: Head) -> bool:
    headings = h.count(_MD_HEADING, 5)
    score = min(headings, 3) + min(h.count(_MD_FENCE, 4), 4) // 2 * 2 + min(h.count(_MD_LINK, 3), 3)
    score += min(h.count(_MD_EMPH, 3), 3) // 3
    return headings >= 1 and score >= 4


# AsciiDoc: `== Title`, `:attribute: value`, block attributes `[source,c]`, delimited blocks.
_ADOC_TITLE = re.compile(r"^={1,5} \S[^\n]*$", M)
_ADOC_ATTR = re.compile(r"^:[\w-]+:(?: |$)", M)
_ADOC_BLOCK = re.compile(r"^\[(?:source|listing|NOTE|TIP|WARNING|IMPORTANT|CAUTION|quote|verse|cols)[^\]\n]*\]\s*$"
                         r"|^(?:----|\.\.\.\.|====|\*\*\*\*|\|===)\s*$", M)


def asciidoc(h: Head) -> bool:
    score = min(h.count(_ADOC_TITLE, 3), 3) + min(h.count(_ADOC_ATTR, 3), 3) + min(h.count(_ADOC_BLOCK, 3), 3)
    return score >= 4 and h.count(_ADOC_TITLE, 1) >= 1


_HTML_TAG = re.compile(r"<(?:!DOCTYPE html|html|head|body|div|p|h[1-6]|ul|ol|li|table|tr|td|a href|span|pre|br)\b",
                       re.IGNORECASE)


def html(h: Head) -> bool:
    return h.count(_HTML_TAG, 8) >= 8


# Lines that look like code: statements ending in ; { } ) :, keywords at line start, assignments.
_CODE_LINE = re.compile(
    r"^\s*(def |class |import |from \S+ import |#include|#define|return\b|if \(|for \(|while \(|"
    r"(el)?if .*:$|else:|try:|except\b.*:$|finally:|for .* in .*:$|while .*:$|with .*:$|raise |yield\b|"
    r"function\b|var |let |const |public |private |static |package |fn |func |@\w+)"
    r"|[;{}(\[,]\s*$|\)\s*:?\s*$|^\s*[\w.\[\]]+\s*[+\-*/|&]?=\s*\S|^\s*[\w.]+\(.*\)\s*$"
)


def code_fraction(text: str, max_lines: int = 400) -> float:
    """Fraction of non-blank lines (among the first `max_lines`) that look like code."""
    # Only the head is read: a 1 MB file is judged by its first lines, at constant cost.
    lines = [ln for ln in text[:200 * max_lines].splitlines()[:max_lines] if ln.strip()]
    if not lines:
        return 0.0
    return _matching(_CODE_LINE.search, lines) / len(lines)


# Source code: the share of lines that read as statements, backed by symbol density for
# languages whose lines `_CODE_LINE` misses.
_SOURCE_OPENINGS = ('"""', "'''", "#!", "# ", "#-", "import ", "from ", "#include", "/*", "//", "package ", "use ",
                    "def ", "class ")
_CODE_SYMBOLS = re.compile(r"[{}();\[\]$@&|]")  # not <>=: markup is full of them


def code(h: Head) -> bool:
    lines = h.lines
    if not lines:
        return False
    frac = h.code_fraction
    if frac >= 0.4 and len(lines) >= 3:
        return True
    # A source file that opens with a long docstring or comment: fewer statement lines, yet its
    # language's keywords (a document with code examples opens with a title instead).
    if lines[0].lstrip().startswith(_SOURCE_OPENINGS) and not h.count(_MD_FENCE, 1):
        hits = _keyword_lines(h)[1]
        if (frac >= 0.2 and hits >= 3) or (len(lines) < 3 and frac >= 0.5 and hits >= 1):
            return True
    return frac >= 0.25 and len(_CODE_SYMBOLS.findall(h.text)) / max(1, len(h.text)) >= 0.04


# Which language a piece of code is in: a few keywords each (`code_language`).
_LANGUAGES: list[tuple[str, re.Pattern]] = [
    ("python", re.compile(r"^\s*(?:def \w+\(|class \w+[(:]|import \w+|from [\w.]+ import |if __name__)", M)),
    ("c", re.compile(r"^\s*(?:#include\s*[<\"]|#define |static \w|struct \w+ \{|typedef |int main\()", M)),
    ("shell", re.compile(r"^(?:#!/bin/(?:ba|da)?sh|\s*(?:fi|esac|done|then)\s*$|\s*(?:export|local) \w+=)", M)),
    ("perl", re.compile(r"^\s*(?:use strict;|my [$@%]\w+|sub \w+ \{|#!/usr/bin/perl)", M)),
    ("javascript", re.compile(r"^\s*(?:function \w+\(|const \w+ = |let \w+ = |module\.exports|require\()", M)),
    ("makefile", re.compile(r"^[\w.$()-]+ *:(?!=)[^\n]*\n\t\S", M)),
]


def _keyword_lines(h: Head) -> tuple[str | None, int]:
    best, hits = None, 0
    for name, pattern in _LANGUAGES:
        n = h.count(pattern, 50)
        if n > hits:
            best, hits = name, n
    return best, hits


def code_language(text: str) -> str | None:
    """The language whose keywords most lines of `text`'s head show, or None."""
    best, hits = _keyword_lines(Head(text))
    return best if hits >= 2 else None


# YAML / JSON / INI: most lines are keys with values, list items, brackets or section headers.
_KEY_VALUE = re.compile(r"\s*(?:- )?(?:[\w.\-/\"'$,@+]+|\"[^\"\n]+\")\s*(?::(?:\s|$)|=)")
_YAML_START = re.compile(r"^(?:%YAML [\d.]+|---)\s*$", M)
_CONFIG_LINE = re.compile(r"\s*(?:- |[\[\]{}],?$|\[[\w .:\"-]+\]\s*$|#|;|---\s*$|\.\.\.\s*$)")


def config(h: Head) -> bool:
    lines = h.lines
    if len(lines) < 4:
        return False
    text = h.text.lstrip()
    closers = (",", "{", "[", "}", "]", "},", "],")
    if text[:1] in "{[" and sum(ln.rstrip().endswith(closers) for ln in lines) >= 0.6 * len(lines):
        return True
    keys = list(map(_KEY_VALUE.match, lines))
    structured = sum(1 for ln, m in zip(lines, keys) if m or _CONFIG_LINE.match(ln))
    keyed = [(ln, m.end()) for ln, m in zip(lines, keys) if m]
    # A glossary's "term: definition" lines are keyed too; their values are sentences.
    wordy = sum(1 for ln, end in keyed
                if len(ln[end:].split(" #")[0].split()) >= 5)  # a trailing comment is not the value
    if keyed and wordy >= 0.5 * len(keyed):
        return False
    keyed = len(keyed)
    if h.count(_YAML_START, 1) and keyed >= 0.3 * len(lines):
        return True
    return structured >= 0.75 * len(lines) and keyed >= 0.3 * len(lines)


# Licences and copyright notices: the phrases licences are made of, and Debian's machine-readable
# copyright format (DEP-5).
_LEGAL = re.compile(
    r"SPDX-License-Identifier|Permission is hereby granted|Redistribution and use in source and binary forms"
    r"|GNU (?:LESSER |LIBRARY |AFFERO )?GENERAL PUBLIC LICENSE|Licensed under the Apache License"
    r"|THE SOFTWARE IS PROVIDED|WITHOUT ANY WARRANTY|is free software; you can redistribute it"
    r"|Creative Commons|Mozilla Public License|Artistic License|Public Domain Dedication"
    r"|Apache License|TERMS AND CONDITIONS|This package was debianized by|LICENSE AGREEMENT|hereby granted"
    r"|Permission to use, copy, modify|All rights reserved"
    r"|(?i:^[\s#*/;-]*Copyright(?: \(C\)| ©|:)? +(?:\d{4}|[A-Z][a-z]+))|^(?:License|Files|Copyright):(?: \S|\s*$)|^Upstream-Name:", M)
_LEGAL_WORD = re.compile(r"(?i)\b(?:licen[cs]e[ds]?|copyright(?:ed)?|warrant(?:y|ies)|liabilit(?:y|ies))\b")
_DEP5 = re.compile(r"^Format: https?://www\.debian\.org/doc/packaging-manuals/copyright-format", M)


def legal(h: Head) -> bool:
    if h.count(_DEP5, 1):
        return True
    if h.code_fraction >= 0.5:  # a source file under its licence header is code
        return False
    strong = h.count(_LEGAL, 3)
    return strong >= 3 or (strong >= 2 and len(h.text) < 3000) or (strong >= 1 and h.count(_LEGAL_WORD, 8) >= 8)


# Dictionaries and glossaries: entries of a short term followed by its definition, on the same
# line after a separator or indented below it; a word list is one term per line.
_ENTRY_INLINE = re.compile(r"\s*[\w(][\w .,'()/-]{0,40}?\s*(?: - | -- | — |: |\t+)\S")
_TERM_THEN_BODY = re.compile(r"^[\w(][^\n]{0,40}\n(?: {2,}|\t)\S", M)
_WORD = re.compile(r"\s*[\w'-]+\s*$")


def dictionary(h: Head) -> bool:
    lines = h.lines
    if len(lines) < 5:
        return False
    if _matching(_WORD.match, lines) >= 0.8 * len(lines):
        return True
    if h.share(_ENTRY_INLINE) >= 0.6:
        return True
    indented = sum(1 for ln in lines if ln[:1] in " \t")
    return h.count(_TERM_THEN_BODY, 200) >= 0.25 * len(lines) and indented >= 0.4 * len(lines)


# Tables: rows of cells between `|`, grid borders `+---+---+`, or columns aligned by runs of spaces.
_TABLE_ROW = re.compile(r"\s*(?:\|[^|\n]*){2,}\|?\s*$|\s*\+[-=+]{4,}\+?\s*$|\s*[-=]{3,}(?: +[-=]{3,})+\s*$")
_ALIGNED = re.compile(r"\s*\S+(?: \S+)*(?: {2,}\S+(?: \S+)*){2,}\s*$")


def table(h: Head) -> bool:
    lines = h.lines
    if len(lines) < 4:
        return False
    return h.share(_TABLE_ROW) >= 0.4 or h.share(_ALIGNED) >= 0.6


DETECTORS: dict[str, Callable[[Head], bool]] = {
    "changelog": changelog, "man": man, "legal": legal, "config": config, "code": code, "rst": rst,
    "asciidoc": asciidoc, "markdown": markdown, "html": html, "dictionary": dictionary, "table": table,
}
PRIORITY = tuple(DETECTORS)
"""The order detectors are tried in: most specific form first."""


def check_names(names: Sequence[str], field: str) -> None:
    """A ValueError naming `field` for a detector name that does not exist."""
    for name in names:
        if name not in DETECTORS:
            raise ValueError(f"{field}: unknown detector {name!r}; valid: {', '.join(DETECTORS)}")


def detect(text: str, names: Sequence[str] = PRIORITY) -> str | None:
    """The first detector in `PRIORITY` order among `names` that matches `text`, or None (prose)."""
    h = Head(text)
    wanted = set(names)
    for name in PRIORITY:
        if name in wanted and DETECTORS[name](h):
            return name
    return None
