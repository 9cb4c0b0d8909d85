"""The lock of a run directory on object storage (`s3://bucket/prefix`): `ObjectLock`, the
object-store counterpart of the local lock file (pipeline/running/lock.py), holding the same JSON
and judging a holder the same way."""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading

from curate.pipeline.errors import CurateError
from curate.pipeline.running.lock import (HEARTBEAT_S, LOCK_NAME, RunLocked, _describe, _record, _seen_from_here,
                                          stale_after_s)


class ObjectLock:
    """The lock of a run directory on object storage (`s3://bucket/prefix`): the object
    `prefix/.curate.lock`, holding the same JSON as a local lock file.

    It is created with a conditional put (`If-None-Match: *`), which S3 (since 2024), MinIO and
    moto carry out atomically: of two runs starting at once, one gets a 412 and is refused. The
    holder rewrites it every `heartbeat_s` with `If-Match` on the ETag it last wrote, so a holder
    whose lock was taken over notices and says so. A holder on this host is judged by its pid, as
    for a local lock; one elsewhere is stale once the object is older than `stale_after_s()` on
    the store's clock (its last-modified against the `Date` of the reply that read it). Taking
    over deletes the stale object with `If-Match` on the ETag read, so two takers cannot both
    win."""

    def __init__(self, url: str, command: str, echo=None, heartbeat_s: float = HEARTBEAT_S):
        from curate.stages.inputs.objstore import s3_client, s3_location

        self.url = url.rstrip("/")
        bucket, prefix = s3_location(self.url)
        self.bucket, self.key = bucket, f"{prefix}/{LOCK_NAME}" if prefix else LOCK_NAME
        self.client = s3_client()
        self.command = command
        self.echo = echo or (lambda m: print(m, file=sys.stderr, flush=True))
        self.heartbeat_s = heartbeat_s
        self.token = secrets.token_hex(8)
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "ObjectLock":
        body = json.dumps(_record(self.command, self.token)).encode()
        for _ in range(100):
            try:
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                                   IfNoneMatch="*")["ETag"]
            except self.client.exceptions.ClientError as e:
                if _error_code(e) in ("NotImplemented", "501"):
                    raise CurateError(f"{self.url}: the object store does not carry out conditional writes "
                                      f"(If-None-Match), which the run directory's lock needs") from None
                if not _precondition_failed(e):
                    raise
            else:
                # Read back: a store that ignored the condition shows a concurrent starter's lock here.
                if (self._holder()[0] or {}).get("token") == self.token:
                    break
                self.etag = None
                raise RunLocked(f"run directory {self.url} is being started by another run at the same time")
            holder, etag, age = self._holder()
            if holder is None:
                continue  # released between our put and our read: try again
            seen, why = _seen_from_here(holder)
            if not seen and age is not None and age > stale_after_s():
                why = f"its heartbeat is {age:.0f} s old (stale after {stale_after_s():.0f} s)"
            if why is None:
                raise RunLocked(self._refusal(holder, age))
            if self._delete(etag):
                self.echo(f"curate: taking over the lock of {self.url} from {_describe(holder)}: {why}")
        else:
            raise RunLocked(f"could not take the lock s3://{self.bucket}/{self.key} (it keeps changing hands)")
        self._thread = threading.Thread(target=self._beat, args=(body,), name="curate-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.etag is not None:
            self._delete(self.etag)
            self.etag = None

    def __enter__(self) -> "ObjectLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _beat(self, body: bytes) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                self.etag = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=body,
                                                   IfMatch=self.etag)["ETag"]
            except self.client.exceptions.ClientError as e:
                if _precondition_failed(e) or _missing(e):
                    self.echo(f"curate: the lock of {self.url} was taken over by another run; this run's "
                              f"uploads may mix with its own")
                    self.etag = None
                    return
            except Exception:  # a network blip: the next beat tries again, well within the lease
                pass

    def _holder(self) -> tuple[dict | None, str | None, float | None]:
        """(the lock's JSON, its ETag, its age in seconds on the store's clock), or Nones."""
        from email.utils import parsedate_to_datetime

        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.ClientError as e:
            if _missing(e):
                return None, None, None
            raise
        text = got["Body"].read().decode("utf-8", "replace").strip()
        try:
            h = json.loads(text)
        except json.JSONDecodeError:
            h = None
        if not isinstance(h, dict):
            h = {"token": text, "unreadable": True}
        date = got["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
        age = (parsedate_to_datetime(date) - got["LastModified"]).total_seconds() if date else None
        return h, got["ETag"], age

    def _delete(self, etag: str | None) -> bool:
        """Delete the lock if it still has `etag`; True if deleted."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
            return True
        except self.client.exceptions.ClientError as e:
            if _precondition_failed(e) or _missing(e):
                return False
            raise

    def _refusal(self, h: dict, age: float | None) -> str:
        who = "an unreadable lock" if h.get("unreadable") else _describe(h)
        rule = ""
        if h.get("unreadable") or h.get("host") != socket.gethostname():
            rule = (f"; it is taken over once its heartbeat is {stale_after_s():.0f} s old"
                    + (f" (now {age:.0f} s)" if age is not None else ""))
        return (f"run directory {self.url} is in use by {who}{rule}; wait for it to finish "
                f"(lock object s3://{self.bucket}/{self.key})")


def _error_code(e: Exception) -> str:
    return str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))


def _precondition_failed(e: Exception) -> bool:
    # 409 ConditionalRequestConflict: another conditional write to the key was in flight.
    return _error_code(e) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def _missing(e: Exception) -> bool:
    return _error_code(e) in ("NoSuchKey", "404", "NotFound")
