"""`curate query` and `curate serve` run reads only: one statement, judged on DuckDB's own parse.

EXPLAIN ANALYZE runs the statement it explains, so an EXPLAIN is judged by that statement. DuckDB's
Python API types `EXPLAIN [options] <stmt>` as EXPLAIN without exposing <stmt>; it is found by
skipping EXPLAIN's own options with DuckDB's tokenizer, in one pass: `ANALYZE`/`ANALYSE`, `VERBOSE`
and one parenthesised option list. Each place <stmt> could start is parsed once (at most four), so
the cost is linear in the query's length: a 4,000-option list costs one tokenization, not one parse
per option. Where an option could itself start a statement (`EXPLAIN ANALYZE CHECKPOINT` reads as
an ANALYZE), that statement is no read, so the query is refused either way.
"""

from __future__ import annotations

import duckdb

from curate.pipeline.errors import QueryError

ALLOWED = {duckdb.StatementType.SELECT}
MAX_EXPLAIN_DEPTH = 4  # EXPLAIN ANALYZE EXPLAIN ...: each level parses its tail once more
_FLAGS = ("ANALYZE", "ANALYSE", "VERBOSE")


def _starts(sql: str) -> list[int]:
    """Where the explained statement could start, in order: right after EXPLAIN, after each flag,
    after the option list."""
    tokens = [(pos, kind) for pos, kind in duckdb.tokenize(sql) if kind != duckdb.token_type.comment]
    ends = [*(p for p, _ in tokens[1:]), len(sql)]
    text = [sql[p:e].strip() for (p, _), e in zip(tokens, ends)]
    out, i = [], 1
    while i < len(tokens):
        out.append(tokens[i][0])
        if text[i].upper() in _FLAGS and len(out) <= 2:  # ANALYZE VERBOSE at most; more parses nothing new
            i += 1
            continue
        if text[i].startswith("("):  # the option list: up to its closing parenthesis
            depth = 0
            while i < len(tokens):
                if tokens[i][1] == duckdb.token_type.operator:
                    depth += text[i].count("(") - text[i].count(")")
                i += 1
                if depth <= 0:
                    break
            if i < len(tokens):
                out.append(tokens[i][0])
        break
    return out


def explained(sql: str) -> tuple[duckdb.Statement, str] | None:
    """(the statement an EXPLAIN explains, its text), or None when none parses."""
    for pos in _starts(sql):
        try:
            tail = duckdb.extract_statements(sql[pos:])
        except duckdb.Error:
            continue
        return (tail[0], sql[pos:]) if len(tail) == 1 else None
    return None


def check_read_only(sql: str) -> None:
    """Refuse anything but one read statement (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE), or an
    EXPLAIN of one (QueryError saying what it is)."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"could not parse the query: {e}") from None
    if len(statements) != 1:
        raise QueryError(f"give exactly one statement (got {len(statements)})")
    kind, what, depth = statements[0].type, f"a {statements[0].type.name} statement", 0
    while kind == duckdb.StatementType.EXPLAIN:
        depth += 1
        inner = explained(sql) if depth <= MAX_EXPLAIN_DEPTH else None
        if inner is None:
            raise QueryError("could not find the statement this EXPLAIN explains; EXPLAIN one read statement")
        (statement, sql) = inner
        kind, what = statement.type, f"an EXPLAIN of a {statement.type.name} statement (EXPLAIN ANALYZE runs it)"
    if kind not in ALLOWED:
        raise QueryError(f"only read statements run (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, or EXPLAIN of one); "
                         f"this is {what}")
