"""Text normalization applied at ingest: Unicode NFC, invalid code points replaced and counted,
NUL and other control characters stripped (`\\n` and `\\t` are kept)."""

from __future__ import annotations

import re
import unicodedata

# C0 controls except \t (09) and \n (0a), and DEL. \r is dropped so that CRLF files and LF files
# of the same text normalize to the same document (and the same id).
_C0_BYTES = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])
# The C1 block (U+0080..U+009F) is encoded in UTF-8 as C2 80..C2 9F.
_C1 = re.compile("[\x80-\x9f]")
_C1_BYTES = re.compile(b"\xc2[\x80-\x9f]")
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
    replaced = 0
    if text.isascii():
        # bytes.translate deletes at C speed; a str regex over every document was ingest's
        # largest cost.
        raw = text.encode("ascii")
        cleaned = raw.translate(None, _C0_BYTES)
        if len(cleaned) == len(raw):
            return text, 0, 0
        return cleaned.decode("ascii"), 0, len(raw) - len(cleaned)
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (from JSON escapes like "\\ud800") are the only str that UTF-8 can't
        # encode; the failed encode finds them without a separate scan of every text.
        text, replaced = _SURROGATE.subn(REPLACEMENT, text)
        raw = text.encode("utf-8")
    # ASCII control bytes never occur inside a multi-byte UTF-8 sequence, so deleting them from
    # the encoded text is exact.
    cleaned_raw = raw.translate(None, _C0_BYTES)
    removed = len(raw) - len(cleaned_raw)
    cleaned = cleaned_raw.decode("utf-8") if removed else text
    if _C1_BYTES.search(cleaned_raw):
        cleaned, n = _C1.subn("", cleaned)
        removed += n
    if not unicodedata.is_normalized("NFC", cleaned):
        cleaned = unicodedata.normalize("NFC", cleaned)
    return cleaned, replaced, removed
