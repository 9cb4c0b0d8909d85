"""A query result in each format `curate query` and `curate serve` give: JSON, CSV, Parquet, Arrow.

Every DuckDB type gets through (tests/test_query_formats.py holds one column of each):
- DuckDB hands a few types to Arrow lossily (UHUGEINT past 2^127 wraps, TIMETZ loses its offset,
  BIT and BIGNUM become opaque bytes): `exact_relation` casts those columns to DuckDB's own text.
- JSON: dates and times as ISO 8601, decimals as strings (exact; integral ones, HUGEINT, as
  numbers), blobs as base64, intervals as {months, days, nanoseconds}, maps as [key, value]
  pairs, NaN and infinities as null, counted in `non_finite`.
- CSV: nested values (lists, structs, maps, unions) and intervals as their JSON text, blobs as
  base64. Parquet: intervals and unions (which Parquet cannot hold) as JSON text.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import math
import re

import duckdb
import pyarrow as pa

# DuckDB types its Arrow export changes (see above), by the names `DuckDBPyType` prints.
_LOSSY = re.compile(r"\b(UHUGEINT|BIT|BIGNUM|VARINT|TIME WITH TIME ZONE|VARIANT|GEOMETRY)\b")


def exact_relation(rel: duckdb.DuckDBPyRelation) -> duckdb.DuckDBPyRelation:
    """`rel` with each column of a lossy type (or holding one) cast to VARCHAR."""
    types = [str(t) for t in rel.types]
    if not any(_LOSSY.search(t) for t in types):
        return rel

    def ident(name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    return rel.select(", ".join(f"CAST({ident(c)} AS VARCHAR) AS {ident(c)}" if _LOSSY.search(t) else ident(c)
                                for c, t in zip(rel.columns, types)))


class _Cells:
    """Python values of Arrow cells made JSON-safe; counts the NaN/inf written as null."""

    def __init__(self):
        self.non_finite = 0

    def __call__(self, v):
        if v is None or isinstance(v, (bool, int, str)):
            return v
        if isinstance(v, float):
            if math.isfinite(v):
                return v
            self.non_finite += 1
            return None
        if isinstance(v, decimal.Decimal):
            return int(v) if v.is_finite() and v == v.to_integral_value() and v.as_tuple().exponent >= 0 else str(v)
        if isinstance(v, (dt.datetime, dt.date, dt.time)):
            return v.isoformat()
        if isinstance(v, (bytes, bytearray, memoryview)):
            return base64.b64encode(bytes(v)).decode()
        if isinstance(v, pa.MonthDayNano):  # a tuple: before the lists
            return {"months": v.months, "days": v.days, "nanoseconds": v.nanoseconds}
        if isinstance(v, dict):
            return {str(k): self(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [self(x) for x in v]
        if hasattr(v, "isoformat"):  # pandas' Timestamp (TIMESTAMP_NS)
            return v.isoformat()
        return str(v)


def _plain(tp: pa.DataType) -> bool:
    return pa.types.is_string(tp) or pa.types.is_large_string(tp) or pa.types.is_integer(tp) or pa.types.is_boolean(tp)


def json_rows(table: pa.Table) -> tuple[list[dict], int]:
    """(rows as JSON-safe dicts, count of NaN/inf written as null)."""
    cells = _Cells()
    columns = []
    for col in table.columns:
        values = col.to_pylist()
        columns.append(values if _plain(col.type) else [cells(v) for v in values])
    names = table.column_names
    return [dict(zip(names, row)) for row in zip(*columns)], cells.non_finite


def _as_text(col: pa.ChunkedArray, json_text: bool) -> pa.Array:
    cells = _Cells()
    out = []
    for v in col.to_pylist():
        c = cells(v)
        out.append(None if v is None else (json.dumps(c, ensure_ascii=False) if json_text else c))
    return pa.array(out, pa.string())


def _has(tp: pa.DataType, test) -> bool:
    if test(tp):
        return True
    return any(_has(tp.field(i).type, test) for i in range(tp.num_fields))


def _nested(tp: pa.DataType) -> bool:
    return pa.types.is_nested(tp) or pa.types.is_union(tp) or isinstance(tp, pa.ExtensionType)


def _interval(tp: pa.DataType) -> bool:
    return pa.types.is_interval(tp) or pa.types.is_union(tp)


def _replace(table: pa.Table, convert) -> pa.Table:
    """`table` with each column `convert(column)` returns an array for replaced by it."""
    for i, col in enumerate(table.columns):
        new = convert(col)
        if new is not None:
            table = table.set_column(i, pa.field(table.schema.field(i).name, new.type), new)
    return table


def for_csv(table: pa.Table) -> pa.Table:
    def convert(col):
        tp = col.type
        if pa.types.is_dictionary(tp):
            return pa.chunked_array([c.dictionary_decode() for c in col.chunks], tp.value_type) if col.num_chunks \
                else pa.array([], tp.value_type)
        if _nested(tp) or pa.types.is_interval(tp) or pa.types.is_null(tp):
            return _as_text(col, json_text=not pa.types.is_null(tp))
        if pa.types.is_binary(tp) or pa.types.is_large_binary(tp) or pa.types.is_fixed_size_binary(tp):
            return _as_text(col, json_text=False)
        return None

    return _replace(table, convert)


def for_parquet(table: pa.Table) -> pa.Table:
    return _replace(table, lambda col: _as_text(col, json_text=True) if _has(col.type, _interval) else None)


def encode(table: pa.Table, fmt: str) -> bytes:
    """`table` as csv, parquet or arrow (an IPC stream) bytes."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    if fmt == "csv":
        pacsv.write_csv(for_csv(table), buf)
    elif fmt == "parquet":
        pq.write_table(for_parquet(table), buf, compression="zstd")
    elif fmt == "arrow":
        with pa.ipc.new_stream(buf, table.schema) as writer:
            writer.write_table(table)
    else:
        raise ValueError(f"unknown format {fmt!r}")
    return buf.getvalue()


def json_document(table: pa.Table, truncated: bool = False) -> dict:
    rows, non_finite = json_rows(table)
    return {"columns": table.column_names, "rows": rows, "truncated": truncated, "non_finite": non_finite}
