"""Inputs in object storage: `s3://bucket/key` (and `gs://`, `hdfs://`) through pyarrow's file
systems, which every Ray worker can open on its own; any other URL scheme through fsspec (its
package installed: `http://` with aiohttp, ...).

Credentials and endpoint come from the standard environment, as with the AWS CLI:
`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or `~/.aws`, an instance role), `AWS_DEFAULT_REGION`,
and `AWS_ENDPOINT_URL` for an S3-compatible store (MinIO, Ceph, a local test server). Each worker
reads them from its own environment: on a cluster, set them on every node (or in the job's
`runtime_env`).
"""

from __future__ import annotations

import fnmatch
import io
from typing import IO

PYARROW_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def is_url(path: str) -> bool:
    return "://" in path


def _pyarrow_fs(url: str):
    """(pyarrow FileSystem, path inside it) for a scheme pyarrow serves, else None."""
    if url.split("://", 1)[0].lower() not in PYARROW_SCHEMES:
        return None
    import pyarrow.fs as pafs

    return pafs.FileSystem.from_uri(url)


def filesystem(url: str):
    """(pyarrow FileSystem, path inside it) for an `s3://` (or other pyarrow-served) URL."""
    got = _pyarrow_fs(url)
    if got is None:
        raise ValueError(f"{url!r}: not a URL pyarrow's file systems serve ({', '.join(PYARROW_SCHEMES)})")
    return got


def s3_location(url: str) -> tuple[str, str]:
    """(bucket, key prefix without slashes at its ends) of `s3://bucket/prefix`."""
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


def s3_client():
    """A boto3 S3 client configured from the standard environment (as pyarrow's is): the run
    directory's lock needs conditional writes, which pyarrow's file system does not offer."""
    import boto3

    return boto3.client("s3")


def open_url(url: str) -> IO[bytes]:
    """A seekable binary stream over the object at `url`."""
    got = _pyarrow_fs(url)
    if got is None:
        import fsspec

        return fsspec.open(url, "rb").open()
    fs, path = got
    try:
        # Buffered: readers read lines, which pyarrow's own files do not offer; still seekable.
        return io.BufferedReader(fs.open_input_file(path), buffer_size=1 << 20)
    except OSError as e:
        if "not exist" in str(e) or "NotFound" in str(e) or "NoSuchKey" in str(e):
            raise FileNotFoundError(f"{url} does not exist") from None
        raise


def expand_url(url: str, where: str) -> list[str]:
    """The objects an input URL names: itself, every object under it when it is a prefix ending in
    `/` or a "folder", or those a glob (`*`, `?`, `[`) in its key matches; hidden names (`.x`)
    are left out as they are for local folders. Raises ValueError when none exists."""
    got = _pyarrow_fs(url)
    if got is None:
        return [url]
    import pyarrow.fs as pafs

    fs, path = got
    scheme = url.split("://", 1)[0]
    pattern = None
    if any(c in path for c in "*?["):
        pattern, cut = path, min(i for i, c in enumerate(path) if c in "*?[")
        path = path[:cut].rsplit("/", 1)[0]
    info = fs.get_file_info(path.rstrip("/"))
    if info.type == pafs.FileType.File and pattern is None:
        return [url]
    if info.type != pafs.FileType.Directory:
        raise ValueError(f"{where}: {url!r} does not exist (no object or prefix of that name)")
    found = fs.get_file_info(pafs.FileSelector(path.rstrip("/"), recursive=True))
    keys = sorted(i.path for i in found if i.type == pafs.FileType.File
                  and not any(p.startswith(".") for p in i.path[len(path):].split("/")))
    if pattern is not None:
        keys = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
    if not keys:
        raise ValueError(f"{where}: {url!r} matches no objects")
    return [f"{scheme}://{k}" for k in keys]


def stamp(url: str) -> tuple:
    """(size, version) of the object at `url`: its modification time or whichever of ETag /
    generation the store reports; a rewritten object changes it, so its ingest task reruns."""
    got = _pyarrow_fs(url)
    if got is not None:
        fs, path = got
        info = fs.get_file_info(path)
        return info.size, str(info.mtime_ns) if info.mtime_ns is not None else None
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    info = fs.info(path)
    version = next((str(info[k]) for k in ("mtime", "LastModified", "last_modified", "ETag", "etag",
                                          "generation", "created") if info.get(k) is not None), None)
    return info.get("size"), version
