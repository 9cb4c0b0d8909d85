"""`curate export RUN --format parquet|jsonl --out DIR [--where SQL] [--shard-mb N]`: the kept
documents of a run, with their metadata, as shards other tools read as they are.

Layout (the Hugging Face Hub's, so `datasets.load_dataset(DIR)` finds the split by itself, and
`load_dataset("parquet" | "json", data_files=...)` reads the files):

    DIR/data/train-00000-of-00003.parquet     every column of the catalog's `docs` view
    DIR/data/train-00000-of-00003.jsonl.gz    Dolma documents: id, text, source, added, created,
                                              metadata (every other column)
    DIR/export.json                           run, where, format, files, documents per file

The export is written into a temporary folder beside DIR and renamed into place when complete;
an earlier export in DIR (one with an export.json) is replaced, any other content is refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa

from curate.pipeline.errors import CurateError

DOLMA_TOP = ("id", "text", "source")
BATCH_ROWS = 2048


def export(run_dir: str, fmt: str = "parquet", out: str = "export", where: str | None = None,
           shard_mb: float = 256.0, added: str | None = None) -> dict:
    """Write the run's kept documents (`docs`, optionally filtered by `where`) to `out`; returns
    the manifest that is also written to `out/export.json`."""
    from curate.pipeline.catalog import db as catalog

    if fmt not in ("parquet", "jsonl"):
        raise CurateError(f"--format must be parquet or jsonl, not {fmt!r}")
    if shard_mb <= 0:
        raise CurateError(f"--shard-mb must be a positive size, got {shard_mb}")
    sql = "SELECT * FROM docs" + (f" WHERE {where}" if where else "")
    catalog.check_read_only(sql)  # one read statement: a `where` cannot smuggle in a second one
    dest = Path(out)
    if dest.exists() and any(dest.iterdir()) and not (dest / "export.json").is_file():
        raise CurateError(f"{dest} exists and holds something other than an earlier export; give an empty "
                          f"or new folder")
    added = added or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    tmp = dest.parent / f".tmp-export-{dest.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    t0 = time.perf_counter()
    import duckdb

    con = catalog.connect(run_dir)
    try:
        writer = _ParquetShards(tmp / "data") if fmt == "parquet" else _DolmaShards(tmp / "data", added)
        limit = int(shard_mb * 1e6)
        try:
            for batch in con.sql(sql).to_arrow_reader(BATCH_ROWS):
                if batch.num_rows:
                    writer.write(batch, limit)
        except duckdb.Error as e:  # e.g. an unknown column in `where`
            raise CurateError(f"--where {where!r}: {catalog.error_message(con, e)}") from None
        files = writer.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        con.close()
    # Final names carry the shard count, known only now.
    n = len(files)
    final = []
    for k, (path, docs, nbytes) in enumerate(files):
        name = f"train-{k:05d}-of-{n:05d}{''.join(path.suffixes)}"
        path.rename(path.parent / name)
        final.append({"path": f"data/{name}", "documents": docs, "bytes": nbytes})
    manifest = {"run": str(Path(run_dir).resolve()), "where": where, "format": fmt, "added": added,
                "documents": sum(f["documents"] for f in final), "files": final,
                "seconds": round(time.perf_counter() - t0, 3)}
    (tmp / "export.json").write_text(json.dumps(manifest, indent=1) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return manifest


class _ParquetShards:
    """Parquet files of about `limit` bytes of Arrow data each (zstd)."""

    def __init__(self, folder: Path):
        self.folder, self.files, self.writer, self.size, self.docs = folder, [], None, 0, 0

    def write(self, batch: pa.RecordBatch, limit: int) -> None:
        import pyarrow.parquet as pq

        if self.writer is None:
            path = self.folder / f"part-{len(self.files):05d}.parquet"
            self.writer = pq.ParquetWriter(path, batch.schema, compression="zstd")
            self.path = path
        self.writer.write_batch(batch)
        self.size += batch.nbytes
        self.docs += batch.num_rows
        if self.size >= limit:
            self._roll()

    def _roll(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.files.append((self.path, self.docs, self.path.stat().st_size))
        self.writer, self.size, self.docs = None, 0, 0

    def close(self) -> list:
        self._roll()
        return self.files


class _DolmaShards:
    """Gzipped JSON lines in Dolma's document format, about `limit` bytes of JSON each."""

    def __init__(self, folder: Path, added: str):
        self.folder, self.added, self.files, self.out, self.size, self.docs = folder, added, [], None, 0, 0

    def write(self, batch: pa.RecordBatch, limit: int) -> None:
        import orjson

        for row in batch.to_pylist():
            doc = {k: row.pop(k, None) for k in DOLMA_TOP}
            date = row.get("date")
            doc["added"] = self.added
            doc["created"] = date.isoformat() if isinstance(date, (dt.date, dt.datetime)) else None
            doc["metadata"] = row
            line = orjson.dumps(doc, default=str) + b"\n"
            if self.out is None:
                self.path = self.folder / f"part-{len(self.files):05d}.jsonl.gz"
                self.out = gzip.open(self.path, "wb", compresslevel=3)
            self.out.write(line)
            self.size += len(line)
            self.docs += 1
            if self.size >= limit:
                self._roll()

    def _roll(self) -> None:
        if self.out is not None:
            self.out.close()
            self.files.append((self.path, self.docs, self.path.stat().st_size))
        self.out, self.size, self.docs = None, 0, 0

    def close(self) -> list:
        self._roll()
        return self.files


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the kept documents as Parquet or Dolma JSONL shards (datasets reads them)")
    p.add_argument("run_dir")
    p.add_argument("--format", default="parquet", choices=["parquet", "jsonl"],
                   help="parquet: every catalog column; jsonl: Dolma documents (id, text, source, added, metadata)")
    p.add_argument("--out", required=True, help="output folder (an earlier export there is replaced)")
    p.add_argument("--where", help="SQL predicate over the docs view, e.g. \"lang = 'en' AND quality_bucket >= 4\"")
    p.add_argument("--shard-mb", type=float, default=256.0, help="uncompressed MB per file (default 256)")
    p.add_argument("--added", help="Dolma `added` timestamp (default: now, UTC)")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    m = export(a.run_dir, a.format, a.out, a.where, a.shard_mb, a.added)
    print(f"wrote {m['documents']:,} documents in {len(m['files'])} files to {a.out} ({m['seconds']:.1f}s)")
    return 0
