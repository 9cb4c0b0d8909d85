"""Text normalization applied at ingest: Unicode NFC, invalid code points replaced and counted,
NUL and other control characters stripped (`\\n` and `\\t` are kept)."""

from __future__ import annotations

import re
import unicodedata

# C0 controls except \t (09) and \n (0a), DEL, and the C1 block. \r is dropped so that CRLF
# files and LF files of the same text normalize to the same document (and the same id).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_ASCII_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f]")
_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def decode_utf8(raw: bytes) -> tuple[str, int]:
    """Decode bytes as UTF-8, replacing invalid sequences; returns (text, replacements)."""
    try:
        return raw.decode("utf-8"), 0
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return text, text.count(REPLACEMENT) - raw.count(b"\xef\xbf\xbd")


def normalize_text(text: str) -> tuple[str, int, int]:
    """Returns (normalized text, invalid code points replaced, control characters removed)."""
    if text.isascii():
        cleaned = _ASCII_CONTROL.sub("", text)
        return cleaned, 0, len(text) - len(cleaned)
    replaced = 0
    if _SURROGATE.search(text):
        # Lone surrogates come from JSON escapes like "\\ud800"; they cannot be encoded as UTF-8.
        text, replaced = _SURROGATE.subn(REPLACEMENT, text)
    cleaned = _CONTROL.sub("", text)
    removed = len(text) - len(cleaned)
    return unicodedata.normalize("NFC", cleaned), replaced, removed
