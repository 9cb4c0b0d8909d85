"""A run directory on object storage: `out: s3://bucket/prefix`.

The runner and the stages work on a local directory (shards are committed by rename, markers
sit beside them). A run whose `out` is an `s3://` URL therefore runs in a local staging directory
(`--stage-dir`, default `$XDG_CACHE_HOME/curate/runs/<digest of the URL>`), which
  - at the start is filled from the bucket (`pull`): config, markers, shards, everything the
    resume check reads; objects unchanged since this directory last saw them are not fetched;
  - while the run goes is pushed to the bucket by a thread of the driver (`Syncer`) every
    `sync_s` seconds, and once more at the end (also when the run fails). A push uploads the files
    changed since the last one (size and mtime, then the content digest, tell), data files before
    markers, and a marker only once every file it vouches for has been uploaded with the digest
    it records; files the run removed (orphans) are deleted from the bucket, markers first.
So the bucket only ever holds markers whose shards are there; a kill -9 loses at most the work
since the last push, and the rerun pulls and lets the runner's own marker and digest checks decide
what is current. `ObjectLock` (pipeline/running/lock.py) keeps a second run out of the prefix.

The catalog (`curate query` / `curate stats` with an `s3://` run) reads a local copy of the run
(`view_copy`), fetched the same way and kept in step with the bucket (objects gone from the
bucket are removed from it): DuckDB's httpfs extension is not shipped with DuckDB's wheel, and
the catalog's views join delta shards to their base by file name and row number, which DuckDB's
Parquet reader gives for local files.

Credentials and endpoint come from the standard environment (stages/inputs/objstore.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

from curate.pipeline.errors import ConfigError, CurateError
from curate.pipeline.running import logs
from curate.pipeline.running.lock import LOCK_NAME
from curate.pipeline.running.object_lock import ObjectLock
from curate.stages import shardio

from curate.stages.inputs import objstore
log = logs.log.getChild("remote")
SYNC_S = 5.0
MANIFEST = ".curate-sync.json"  # what this directory last pushed or pulled: never synced itself
_CHUNK = 8 << 20
TRANSFERS = 8  # objects sent or fetched at once


def is_remote(out: str) -> bool:
    return out.lower().startswith("s3://")


def check_url(url: str, field: str = "out") -> None:
    """A run directory URL must be `s3://bucket/prefix`; ValueError naming the field otherwise."""
    if not is_remote(url):
        scheme = url.split("://", 1)[0]
        raise ValueError(f"{field}: {url!r}: a run directory on object storage must be an s3:// URL "
                         f"(s3://bucket/prefix; any S3-compatible store through AWS_ENDPOINT_URL), not {scheme}://")
    bucket, prefix = objstore.s3_location(url)
    if not bucket or not prefix:
        raise ValueError(f"{field}: {url!r} needs a bucket and a prefix inside it (s3://bucket/prefix): "
                         f"the run directory is a prefix of its own")


def check_reachable(url: str, field: str = "out") -> None:
    """Credentials found and the bucket there, or one ConfigError line saying which is not."""
    import boto3
    import botocore.exceptions as bx

    bucket, _ = objstore.s3_location(url)
    if boto3.Session().get_credentials() is None:
        raise ConfigError(field, f"{url}: no S3 credentials found: set AWS_ACCESS_KEY_ID and "
                                 f"AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, ~/.aws/credentials, an instance role)")
    try:
        objstore.s3_client().head_bucket(Bucket=bucket)
    except bx.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        what = {"404": "does not exist", "NoSuchBucket": "does not exist",
                "403": "is not accessible with these credentials"}.get(code, f"cannot be reached ({e})")
        raise ConfigError(field, f"{url}: bucket {bucket!r} {what}") from None
    except (bx.BotoCoreError, ValueError) as e:
        raise ConfigError(field, f"{url}: the object store cannot be reached ({e})") from None


def _cache_dir(kind: str, url: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "curate" / kind / hashlib.blake2b(url.rstrip("/").encode(), digest_size=8).hexdigest()


def staging_dir(url: str, given: str | os.PathLike | None = None) -> Path:
    """Where a run of `url` works: `given`, else a directory of the user's cache named by the URL."""
    return Path(given).absolute() if given else _cache_dir("runs", url).absolute()


def _synced(rel: str) -> bool:
    """Whether a run file travels: not a lock, a temporary or the manifest, nor a global stage's
    scratch (`_work/`): the stage removes it when it ends, and a push after that may never come
    (a kill), leaving a finished stage's scratch in the bucket; a stage redoes missing scratch."""
    parts = rel.split("/")
    name = parts[-1]
    return not (name.startswith(LOCK_NAME) or name.startswith(".tmp-") or name == MANIFEST or "_work" in parts[:-1])


def _is_marker(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 3 and parts[-2] == "_done" and rel.endswith(".json")


class RemoteRun:
    """The run directory `url` mirrored in the local directory `local` (module docstring).
    `files` (the manifest) maps each synced path to its size, digest, local stamp and the
    object's stamp (size, mtime) as last seen."""

    def __init__(self, url: str, local: str | os.PathLike):
        self.url = url.rstrip("/")
        self.local = Path(local)
        self.fs, self.root = objstore.filesystem(self.url)
        self.manifest = self.local / MANIFEST
        self.files: dict[str, dict] = {}
        try:
            saved = json.loads(self.manifest.read_text())
            if saved.get("url") == self.url:
                self.files = saved["files"]
        except (OSError, ValueError, KeyError):
            pass
        self._lock = threading.Lock()  # one push at a time (the syncer's, the final one)

    def _save(self) -> None:
        shardio.atomic_write_json(self.manifest, {"url": self.url, "files": self.files})

    def _remote(self) -> dict[str, list]:
        """Every synced object under the prefix: relative path -> [size, mtime_ns]."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.root, recursive=True, allow_not_found=True))
        cut = len(self.root) + 1
        return {i.path[cut:]: [i.size, i.mtime_ns] for i in infos
                if i.type == pafs.FileType.File and _synced(i.path[cut:])}

    def _local(self) -> dict[str, os.stat_result]:
        found = {}
        for dirpath, _, names in os.walk(self.local):
            for name in names:
                p = Path(dirpath) / name
                rel = p.relative_to(self.local).as_posix()
                if _synced(rel):
                    with contextlib.suppress(FileNotFoundError):  # removed while we walk
                        found[rel] = p.stat()
        return found

    # -- pull -------------------------------------------------------------------------------

    def pull(self, exact: bool = False) -> int:
        """Fetch the objects that changed since this directory last saw them; remove the files
        the bucket no longer has that came from it (every such file when `exact`: a read-only
        copy). Files this directory made and never pushed (a killed run's last shards) are kept.
        Returns the number of files fetched."""
        self.local.mkdir(parents=True, exist_ok=True)
        if not self.manifest.exists():
            self._save()  # the directory is this run's from now on, even if the pull is cut short
        remote, local = self._remote(), self._local()
        todo = []
        for rel, stamp in sorted(remote.items()):
            entry, st = self.files.get(rel), local.get(rel)
            if entry and entry["remote"] == stamp and st is not None and _stamp(st) == entry["local"]:
                continue
            if entry and entry["remote"] == stamp and st is not None and not exact:
                continue  # changed here since the last push: the newer work stays
            todo.append(rel)
        _each(lambda rel: self._download(rel, remote[rel]), todo)
        for rel in [r for r in (local if exact else list(self.files)) if r not in remote]:
            (self.local / rel).unlink(missing_ok=True)
            self.files.pop(rel, None)
        self._save()
        return len(todo)

    def _download(self, rel: str, stamp: list) -> None:
        import xxhash

        h = xxhash.xxh3_128()
        with shardio.AtomicFile(self.local / rel) as out, self.fs.open_input_stream(f"{self.root}/{rel}") as src:
            while block := src.read(_CHUNK):
                h.update(block)
                out.write(block)
        st = (self.local / rel).stat()
        self.files[rel] = {"bytes": st.st_size, "xxh3": h.hexdigest(), "local": _stamp(st), "remote": stamp}

    # -- push -------------------------------------------------------------------------------

    def push(self) -> int:
        """Upload what changed since the last push (module docstring: data files, then the
        markers whose files are all up); delete the objects of files removed here. Returns the
        number of files uploaded."""
        with self._lock:
            local = self._local()
            changed = {rel: d for rel, st in local.items() if (d := self._changed(rel, st)) is not None}
            data = [r for r in sorted(changed) if not _is_marker(r)]
            markers = [r for r in sorted(changed) if _is_marker(r)]
            sent = sum(_each(lambda rel: self._upload(rel, changed[rel], local[rel]), data))
            vouched = [rel for rel in markers if self._vouched(rel)]
            sent += sum(_each(lambda rel: self._upload(rel, changed[rel], local[rel]), vouched))
            gone = [r for r in self.files if r not in local]
            for batch in (sorted(r for r in gone if _is_marker(r)), sorted(r for r in gone if not _is_marker(r))):
                self._delete(batch)
            if sent or gone:
                self._save()
            return sent

    def _delete(self, rels: list[str]) -> None:
        """Delete the objects of `rels` (through boto3: pyarrow's delete leaves an empty object
        standing for the emptied "folder")."""
        bucket, prefix = objstore.s3_location(self.url)
        client = objstore.s3_client() if rels else None
        for i in range(0, len(rels), 1000):  # DeleteObjects takes up to 1,000 keys
            chunk = rels[i:i + 1000]
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": f"{prefix}/{r}"} for r in chunk],
                                                         "Quiet": True})
            for rel in chunk:
                del self.files[rel]

    def _changed(self, rel: str, st: os.stat_result) -> str | None:
        """The file's digest when it differs from what was last pushed, else None."""
        entry = self.files.get(rel)
        if entry and entry["local"] == _stamp(st):
            return None
        try:
            digest = shardio.file_digest(self.local / rel)
        except FileNotFoundError:
            return None
        if entry and entry["bytes"] == st.st_size and entry["xxh3"] == digest:
            entry["local"] = _stamp(st)  # touched, same bytes: nothing to send
            return None
        return digest

    def _upload(self, rel: str, digest: str, st: os.stat_result) -> bool:
        """Upload one file; recorded only if it is still the file digested (files are replaced
        by rename, so a changed stamp means other bytes: the next push sends those)."""
        try:
            src = open(self.local / rel, "rb")
        except FileNotFoundError:
            return False
        with src:
            if _stamp(os.fstat(src.fileno())) != _stamp(st):
                return False  # checked before the object is opened: closing it would write it
            with self.fs.open_output_stream(f"{self.root}/{rel}") as out:
                while block := src.read(_CHUNK):
                    out.write(block)
        info = self.fs.get_file_info(f"{self.root}/{rel}")
        self.files[rel] = {"bytes": st.st_size, "xxh3": digest, "local": _stamp(st),
                           "remote": [info.size, info.mtime_ns]}
        return True

    def _vouched(self, rel: str) -> bool:
        """Whether every file the marker `rel` records is up with the digest it records."""
        try:
            marker = json.loads((self.local / rel).read_text())
        except (OSError, ValueError):
            return False
        stage = Path(rel).parent.parent
        for name, want in (marker.get("files") or {}).items():
            entry = self.files.get(os.path.normpath(stage / name))
            if entry is None or entry["xxh3"] != want.get("xxh3"):
                return False
        return True


def _each(fn, items: list) -> list:
    """`fn` over `items`, several at a time: an object store answers each request after a round
    trip, so one at a time would leave a run of many small shards behind its pushes."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(TRANSFERS, len(items)), thread_name_prefix="curate-sync") as pool:
        return list(pool.map(fn, items))


def _stamp(st: os.stat_result) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class Syncer:
    """Pushes `remote` every `every` seconds from a thread of the driver, as soon as a stage ends
    (the runner writes the stage's `stats.json` last), and once more on `close()`. A failed
    periodic push is said once and tried again; the final one raises."""

    def __init__(self, remote: RemoteRun, every: float = SYNC_S):
        self.remote, self.every = remote, every
        self._stop = threading.Event()
        self._failed = False
        self._thread = threading.Thread(target=self._loop, name="curate-sync", daemon=True)

    def start(self) -> "Syncer":
        self._thread.start()
        return self

    def _stage_ends(self) -> dict:
        found = {}
        for p in self.remote.local.glob("*/stats.json"):
            with contextlib.suppress(FileNotFoundError):
                found[p.parent.name] = p.stat().st_mtime_ns
        return found

    def _loop(self) -> None:
        last, ends = time.monotonic(), self._stage_ends()
        while not self._stop.wait(min(self.every, 0.5)):
            now = self._stage_ends()
            if now == ends and time.monotonic() - last < self.every:
                continue
            last, ends = time.monotonic(), now
            try:
                self.remote.push()
            except Exception as e:  # the store may be briefly unreachable; the next push catches up
                if not self._failed:
                    log.warning(f"{self.remote.url}: pushing the run failed ({e}); trying again")
                self._failed = True

    def close(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.remote.push()


@contextlib.contextmanager
def staged(url: str, stage_dir: str | os.PathLike | None = None, command: str = "curate run",
           sync_s: float = SYNC_S, say: Callable[[str], None] = log.info) -> Iterator[Path]:
    """Hold the run `url`'s lock, pull it into its staging directory and yield that; the body
    runs there while a `Syncer` pushes it back. The last push happens also when the body fails
    (its finished shards are kept, as in a local run)."""
    check_url(url)
    check_reachable(url)
    local = staging_dir(url, stage_dir)
    with ObjectLock(url, command):
        remote = RemoteRun(url, local)
        _check_staging(remote)
        with _store_errors(f"{url}: fetching the run into {local} failed"):
            say(f"{url}: working in {local} ({remote.pull()} files fetched from the bucket)")
        syncer = Syncer(remote, sync_s).start()
        try:
            yield local
        except BaseException:
            with contextlib.suppress(Exception):  # the run's own error is the one to tell
                syncer.close()
            raise
        with _store_errors(f"{url}: the run finished in {local}, but pushing it to the bucket failed; "
                           f"run the same command again to push it (finished shards are reused)"):
            say(f"{url}: {syncer.close()} files uploaded at the end")


def _check_staging(remote: RemoteRun) -> None:
    """A staging directory holds this run or nothing: another run's files would join this one's
    (its stages' folders pushed into this prefix, shown by the catalog)."""
    if not remote.local.is_dir() or not any(remote.local.iterdir()):
        return
    try:
        owner = json.loads(remote.manifest.read_text()).get("url")
    except (OSError, ValueError):
        owner = None
    if owner != remote.url:
        held = f"the run directory of {owner}" if owner else "files of its own"
        raise ConfigError("--stage-dir", f"{remote.local} holds {held}, not {remote.url}: give an empty directory "
                                         f"(or leave --stage-dir out)")


@contextlib.contextmanager
def _store_errors(what: str) -> Iterator[None]:
    """An object store's failure (pyarrow raises OSError) as one CurateError line."""
    try:
        yield
    except OSError as e:
        raise CurateError(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def view_copy(url: str) -> Path:
    """A local, read-only copy of the run `url` for the catalog, brought up to date with the bucket."""
    try:
        check_url(url, "run_dir")
    except ValueError as e:
        raise CurateError(str(e)) from None
    check_reachable(url, "run_dir")
    copy = RemoteRun(url, _cache_dir("views", url))
    with _store_errors(f"{url}: reading the run from the bucket failed"):
        copy.pull(exact=True)
    if not (copy.local / "stages.json").exists():
        raise CurateError(f"{url} is not a run directory (no stages.json); run `curate run CONFIG --out {url}` first")
    return copy.local
