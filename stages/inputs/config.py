"""What a run config's `inputs:` and `ingest:` sections mean: one `InputSpec` per input (where it
is, how to read it, which fields hold the document columns) and the `IngestConfig` that bounds
the ingest stage's work (stages/inputs/ingest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

@dataclass
class FieldMap:
    """Which input field holds each document column (JSONL keys or Parquet columns)."""

    text: str = "text"
    """field with the document text (required in every record)"""
    id: str | None = "id"
    """field with the record's own id; documents without one get a stable id from source + text"""
    url: str | None = "url"
    """field with the document URL"""
    date: str | None = "date"
    """field with the document date: ISO 8601 string, or Unix seconds"""
    source: str | None = "source"
    """field naming the record's source; falls back to the input's `source`"""


@dataclass
class InputSpec:
    """One input: a file, a directory (read recursively), a glob, an object-storage URL
    (`s3://bucket/prefix/`, stages/inputs/objstore.py), or a Hugging Face dataset (`hf:owner/name`)."""

    path: str
    """local path (relative to the working directory), directory, glob, URL, or `hf:owner/name`
    (a dataset in the local Hugging Face cache; read offline)"""
    format: Literal["auto", "jsonl", "parquet", "text", "html", "warc", "hf"] = "auto"
    """`auto` picks by suffix: .jsonl/.json/.ndjson = jsonl, .parquet, .html/.htm = html,
    .warc = warc, .arrow (+ .gz/.zst each), else text; a `save_to_disk` folder and an `hf:` path
    are read as `hf`. `hf`: a save_to_disk folder or a folder of a dataset's data files"""
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    """html and warc: the main-content extractor (stages/inputs/html.py)"""
    split: str | None = None
    """hf: the split to read (default: every split)"""
    config: str | None = None
    """hf: the dataset config (subset) to read, by its folder name (default: all)"""
    source: str | None = None
    """source name for records that have none (default: the file name up to its first dot; for
    one shard of a family such as `train-00000-of-00004.parquet`, the dataset's folder; for a
    directory of text files, the directory's name)"""
    fields: FieldMap = field(default_factory=FieldMap)
    """input field names"""
    optional: bool = False
    """a local path or glob that does not exist or holds no files is left out, and the run says so
    at its end, instead of stopping the run: an input only some machines have (the demo's HTML)"""


@dataclass
class IngestConfig:
    """How ingest cuts and bounds its work."""

    max_chars: int = 1_000_000
    """records whose text is longer than this are quarantined as `too_long`"""
    shard_docs: int = 20_000
    """at most this many documents per output part"""
    split_mb: float = 32.0
    """uncompressed JSONL and Parquet inputs larger than this are split into tasks of this size"""
    max_page_mb: float = 16.0
    """HTML pages (files or WARC payloads) larger than this are quarantined as `page_too_large`
    unread: a page this big is a data dump or a trap, not prose"""
    limit: int | None = None
    """a quick trial (`curate run --limit N`): read only the first N records of each input file
    (of a directory of text files: its first N files); null reads everything"""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("limit: must be at least 1 record (or null for all)")
        if self.max_chars < 1:
            raise ValueError("max_chars: must be a positive number of characters")
        if self.shard_docs < 1:
            raise ValueError("shard_docs: must be at least 1")
        if self.split_mb <= 0:
            raise ValueError("split_mb: must be a positive size in MB")
        if self.max_page_mb <= 0:
            raise ValueError("max_page_mb: must be a positive size in MB")
