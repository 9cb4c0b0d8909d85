"""One raw record -> one document row, or the reason it is quarantined."""

from __future__ import annotations

import base64
import json
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import orjson
import xxhash

from curate.stages.inputs.normalize import normalize_text


class Rejected(Exception):
    """A record that can't be a document; `reason` is the quarantine reason."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail


def stable_id(source: str, text: str) -> str:
    """Id of a record without one: depends only on its source and normalized text (xxh3, 128
    bits: collisions are out of reach at corpus scale, and it hashes ~10x faster than blake2b)."""
    h = xxhash.xxh3_128()
    h.update(source.encode())
    h.update(b"\x00")
    h.update(text.encode("utf-8"))
    return h.hexdigest()


def _opt_str(rec: dict, key: str | None, reason: str) -> str | None:
    if key is None or rec.get(key) is None:
        return None
    v = rec[key]
    if not isinstance(v, str):
        raise Rejected(reason, f"{key!r} is {type(v).__name__}, expected a string")
    return v


def parse_date(v: Any) -> datetime | None:
    """ISO 8601 strings (date or date-time, `Z` allowed) or Unix seconds; naive times are UTC."""
    if v is None:
        return None
    if isinstance(v, datetime):
        return v if v.tzinfo else v.replace(tzinfo=timezone.utc)
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=timezone.utc)
    if isinstance(v, bool):
        raise ValueError(f"{v!r} is not a date")
    if isinstance(v, (int, float)):
        return datetime.fromtimestamp(v, tz=timezone.utc)
    if isinstance(v, str):
        s = v.strip()
        if s.endswith("Z"):
            s = s[:-1] + "+00:00"
        d = datetime.fromisoformat(s)
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    raise ValueError(f"{type(v).__name__} is not a date")


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(v)).decode("ascii")
    if isinstance(v, (date, datetime)):
        return v.isoformat()
    return str(v)  # durations and whatever else Parquet holds: never a reason to lose the record


def meta_json(rec: dict, mapped: tuple) -> str | None:
    """The fields of `rec` that no document column takes, as one JSON object (None if there are
    none). Parquet values JSON has no type for are written as strings: decimals as their digits,
    bytes in base64, dates in ISO 8601, anything else as `str()` gives it."""
    extra = {k: v for k, v in rec.items() if k not in mapped}
    if not extra:
        return None
    try:
        return orjson.dumps(extra, default=_json_default).decode()
    except TypeError:  # an integer beyond 64 bits, or a lone surrogate: the stdlib writes both
        return json.dumps(extra, default=_json_default)


def to_document(rec: Any, fields, default_source: str, max_chars: int) -> tuple[dict, int, int]:
    """Returns (row, invalid code points replaced, control chars removed); raises Rejected.
    The row holds the document columns and `meta` (the record's other fields, `meta_json`)."""
    if not isinstance(rec, dict):
        raise Rejected("not_an_object", f"record is a JSON {type(rec).__name__}")
    if fields.text not in rec:
        raise Rejected("missing_text", f"no field {fields.text!r}; fields: {sorted(rec)[:10]}")
    text = rec[fields.text]
    if text is None:
        raise Rejected("null_text", f"{fields.text!r} is null")
    if not isinstance(text, str):
        raise Rejected("text_not_string", f"{fields.text!r} is {type(text).__name__}")
    # Cheap bound before normalizing: normalization only ever shortens the text.
    if len(text) > 4 * max_chars:
        raise Rejected("too_long", f"{len(text)} characters > max_chars {max_chars}")
    text, replaced, removed = normalize_text(text)
    if len(text) > max_chars:
        raise Rejected("too_long", f"{len(text)} characters > max_chars {max_chars}")
    if not text.strip():
        raise Rejected("empty_text", "text is empty or whitespace after normalization")

    source = _opt_str(rec, fields.source, "bad_source") or default_source
    url = _opt_str(rec, fields.url, "bad_url")
    try:
        when = parse_date(rec.get(fields.date)) if fields.date else None
    except (ValueError, OverflowError, OSError) as e:
        raise Rejected("bad_date", f"{rec.get(fields.date)!r}: {e}") from None
    rid = rec.get(fields.id) if fields.id else None
    if rid is None:
        rid = stable_id(source, text)
    elif isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise Rejected("bad_id", f"id is {type(rid).__name__}, expected a string or integer")
    else:
        rid = str(rid)  # integers of any size: the JSONL reader keeps those beyond 64 bits whole
        if not rid.strip():
            raise Rejected("bad_id", "id is empty")
    meta = meta_json(rec, (fields.text, fields.id, fields.url, fields.date, fields.source))
    return ({"id": rid, "text": text, "source": source, "url": url, "date": when, "n_chars": len(text),
             "meta": meta}, replaced, removed)
