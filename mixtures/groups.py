"""Mixture groups: named, first-match-ordered SQL slices of the document table.

A group is a name and a predicate over the catalog's `docs` columns (`source`, `domain`,
`quality_bucket`, `lang`, ...). Predicates may overlap: a document belongs to the *first*
group whose predicate is true, which `group_case_sql` encodes as one SQL `CASE`. The planner's
counts and the packer's assignment both use that expression, so they cannot disagree.

This module never runs SQL: the catalog side (pipeline/commands/plan.py) runs the expression and
hands back rows, which `group_stats` turns into available tokens per group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,63}$")

# Used when no tokenizer is available to measure tokens per character. ~4 characters per
# token is the usual figure for English text under a 32k-50k BPE or unigram vocabulary;
# code and non-Latin scripts differ, which is why the plan says when it used this default.
DEFAULT_TOKENS_PER_CHAR = 0.25

# Where the tokens-per-char ratio of an estimate came from; Availability.tokens_per_char_source
# is one of these, "measured" followed by ": <what measured it>".
#   measured: the run's tokenizer on a sample of its documents (pipeline/commands/plan.py)
#   given:    the user's --tokens-per-char / `tokens_per_char=` argument
#   default:  DEFAULT_TOKENS_PER_CHAR, when there was nothing to measure with
#   n/a:      token counts are exact; no ratio was used
TOKENS_PER_CHAR_SOURCES = ("measured", "given", "default", "n/a")


def tokens_per_char_kind(source: str) -> str:
    """The source value of a `tokens_per_char_source` string: measured, given, default or n/a."""
    kind = source.split(":", 1)[0].strip()
    if kind not in TOKENS_PER_CHAR_SOURCES:
        raise GroupError(f"tokens_per_char_source: got {source!r}; valid: "
                         f"{', '.join(TOKENS_PER_CHAR_SOURCES)} (measured may add ': <how>')")
    return kind


class GroupError(ValueError):
    """A group definition is invalid."""


@dataclass(frozen=True)
class Group:
    """A named slice of the catalog."""

    name: str
    """Lower-case identifier, also the packed-token folder `tokens/<name>/`."""
    where: str
    """SQL predicate over the `docs` view, e.g. `domain = 'code' AND quality_bucket >= 3`."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise GroupError(
                f"name: group name {self.name!r} is invalid; use 1-64 characters of a-z, 0-9, "
                "'_' or '-', starting with a letter or digit (it names the folder tokens/<name>/)")
        if not isinstance(self.where, str) or not self.where.strip():
            raise GroupError(f"where: group {self.name!r} needs a non-empty SQL predicate")
        _check_predicate(self.name, self.where)


def _check_predicate(name: str, where: str) -> None:
    """Reject predicates that would break out of the CASE they are spliced into.

    This is about well-formedness, not security: predicates run on the catalog's read-only
    connection, so they cannot change data either way.
    """
    # One pass that knows whether it is inside a '...' string or a "..." identifier (a doubled
    # quote inside either closes and reopens it, which toggling handles): ';', parentheses and
    # comment markers only count outside them, so `url LIKE '%--%'` is a valid predicate.
    depth, quote = 0, None
    for i, ch in enumerate(where):
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            raise GroupError(f"where: group {name!r} predicate must be one expression, found ';'")
        elif where.startswith(("--", "/*"), i):
            raise GroupError(f"where: group {name!r} predicate may not contain SQL comments "
                             f"({where[i:i + 2]!r} outside quotes)")
        else:
            depth += ch == "("
            depth -= ch == ")"
            if depth < 0:
                break
    if quote is not None or depth != 0:
        raise GroupError(f"where: group {name!r} predicate has unbalanced quotes or parentheses: {where!r}")


def parse_groups(items: Sequence[Mapping[str, Any]] | None, field: str = "groups") -> list[Group]:
    """Groups from a list of `{name, where}` mappings (YAML), checking names are unique."""
    if not items:
        raise GroupError(f"{field}: at least one group is required")
    groups: list[Group] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or set(item) - {"name", "where"}:
            raise GroupError(f"{field}[{i}]: expected a mapping with keys name and where, got {item!r}")
        try:
            groups.append(Group(name=item.get("name"), where=item.get("where")))
        except GroupError as e:
            raise GroupError(f"{field}[{i}].{e}") from None
    seen: set[str] = set()
    for g in groups:
        if g.name in seen:
            raise GroupError(f"{field}: group name {g.name!r} is used twice")
        seen.add(g.name)
    return groups


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def group_case_sql(groups: Iterable[Group]) -> str:
    """SQL `CASE` giving each document its first matching group's name (NULL if none).

    A predicate that evaluates to NULL (e.g. on a NULL column) counts as not matching, as in
    a WHERE clause.
    """
    whens = [f"WHEN ({g.where}) THEN {sql_string(g.name)}" for g in groups]
    if not whens:
        raise GroupError("groups: at least one group is required")
    return "CASE " + " ".join(whens) + " ELSE NULL END"


@dataclass
class GroupStats:
    """What the catalog holds for one group."""

    name: str
    where: str
    documents: int
    chars: int
    available_tokens: int
    """Exact (`n_tokens`) or estimated from `chars` x tokens per char."""


@dataclass
class Availability:
    """Per-group availability plus the documents that fall in no group."""

    groups: list[GroupStats]
    token_counts: str
    """"exact" (summed n_tokens) or "estimated" (chars x tokens_per_char)."""
    tokens_per_char: float | None
    """Ratio used for estimates; None for exact counts."""
    tokens_per_char_source: str
    """How the ratio was obtained: "measured: <model> on <n> sampled docs", "given" (by the
    user), "default" (DEFAULT_TOKENS_PER_CHAR) or "n/a" (exact counts); see
    TOKENS_PER_CHAR_SOURCES."""
    unassigned_documents: int
    unassigned_tokens: int

    def by_name(self) -> dict[str, GroupStats]:
        return {g.name: g for g in self.groups}


def group_stats(groups: Sequence[Group], rows: Sequence[Mapping[str, Any]], *,
                tokens_per_char: float | None = None, tokens_per_char_source: str | None = None) -> Availability:
    """Turn catalog rows into availability.

    `rows`: one mapping per group, as `SELECT <group_case_sql> AS grp, count(*) AS documents,
    sum(n_chars) AS chars, sum(n_tokens) AS tokens ... GROUP BY grp` returns them (`grp` None
    for documents in no group; `tokens` absent or None when the docs carry no `n_tokens`).
    Exact counts are used when every row has `tokens`; otherwise tokens are estimated from
    characters with `tokens_per_char` (DEFAULT_TOKENS_PER_CHAR when None).
    `tokens_per_char_source` says where a given ratio came from ("measured: ...", "given");
    None means "given" when a ratio is passed.
    """
    known = {g.name for g in groups}
    by: dict[str | None, Mapping[str, Any]] = {}
    for r in rows:
        key = r.get("grp")
        if key is not None and key not in known:
            raise GroupError(f"catalog returned rows for unknown group {key!r}")
        by[key] = r
    exact = bool(rows) and all(r.get("tokens") is not None for r in rows)
    if not exact and tokens_per_char is None:
        tokens_per_char, tokens_per_char_source = DEFAULT_TOKENS_PER_CHAR, "default"
    elif tokens_per_char_source is None:
        tokens_per_char_source = "given" if tokens_per_char is not None else "default"
    tokens_per_char_kind(tokens_per_char_source)
    if tokens_per_char is not None and not tokens_per_char > 0:
        raise GroupError(f"tokens_per_char: must be > 0, got {tokens_per_char!r}")

    def tokens(r: Mapping[str, Any] | None) -> int:
        if r is None:
            return 0
        if exact:
            return int(r["tokens"] or 0)
        return int(round(int(r.get("chars") or 0) * tokens_per_char))

    stats = []
    for g in groups:
        r = by.get(g.name)
        stats.append(GroupStats(g.name, g.where, int(r["documents"]) if r else 0,
                                int(r.get("chars") or 0) if r else 0, tokens(r)))
    none = by.get(None)
    return Availability(
        groups=stats,
        token_counts="exact" if exact else "estimated",
        tokens_per_char=None if exact else tokens_per_char,
        tokens_per_char_source="n/a" if exact else tokens_per_char_source,
        unassigned_documents=int(none["documents"]) if none else 0,
        unassigned_tokens=tokens(none),
    )
