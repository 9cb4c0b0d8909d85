"""One writer per run directory: `RunLock`.

Two commands writing into one run directory at once would each trust the other's half-finished
shards and leave a mix of both. `curate run`, `pack` and `train` hold `RUN/.curate.lock` while they
write; a second one is refused with a message naming the holder.

The lock is a file holding JSON (host, pid, start time, command, a random token), written under
a unique name and then hard-linked to `.curate.lock`. link(2) fails if the name exists, and is
atomic on NFS too, where flock may never reach the server; the link count of the unique file
settles the case where NFS reports an error for a link that was made.

A lock whose holder is gone is taken over:
  - same host (same boot and PID namespace): when its pid is not alive, or is alive but started
    at another time (the pid was reused);
  - same host name after a reboot (another boot id): always;
  - another host (or container): processes there cannot be seen, so the holder refreshes the
    lock file's mtime every `HEARTBEAT_S` seconds, and a lock not refreshed for `STALE_AFTER_S`
    seconds (env CURATE_LOCK_STALE_S, default 300) is stale. Ages are measured on the file
    server's clock (the mtime of a file just created beside it), so host clocks need not agree.
    A holder that stalls longer than that (a suspended job) can lose its lock.
Taking over removes the stale file under a guard file created with O_CREAT|O_EXCL, after
checking that the lock is still the stale one, so two takers cannot remove each other's new lock.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from curate.pipeline.errors import CurateError

LOCK_NAME = ".curate.lock"
HEARTBEAT_S = 30.0
GUARD_STALE_S = 60.0  # a takeover guard older than this was left by a process that died in between


def stale_after_s() -> float:
    return float(os.environ.get("CURATE_LOCK_STALE_S", "300"))


class RunLocked(CurateError):
    """The run directory is held by another live process."""


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip() or None
    except OSError:
        return None


def _proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid."""
    stat = _read_text(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[1].split()[19] if stat else None


def _identity() -> dict:
    pidns = None
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pass
    return {"host": socket.gethostname(), "boot_id": _read_text("/proc/sys/kernel/random/boot_id"), "pidns": pidns}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _seen_from_here(h: dict) -> tuple[bool, str | None]:
    """(True, why the holder `h` is gone or None while it runs) when its process can be seen from
    here (this host, boot and PID namespace, or this host name after a reboot); (False, None) when
    it cannot, and only its heartbeat's age tells."""
    me = _identity()
    if h.get("unreadable") or h.get("host") != me["host"]:
        return False, None
    if h.get("boot_id") and me["boot_id"] and h["boot_id"] != me["boot_id"]:
        return True, "that host has restarted since"
    if h.get("boot_id") != me["boot_id"] or h.get("pidns") != me["pidns"]:
        return False, None
    pid = int(h.get("pid", 0))
    if pid <= 0 or not _pid_alive(pid):
        return True, "that process is no longer running"
    if h.get("proc_start") and _proc_start(pid) not in (None, h["proc_start"]):
        return True, "that process is no longer running (its pid belongs to another process now)"
    return True, None


def _record(command: str, token: str) -> dict:
    """What a lock holds: who holds it (host, boot, pid and its start), for what, since when."""
    return {**_identity(), "pid": os.getpid(), "proc_start": _proc_start(os.getpid()), "command": command,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "token": token}


def _describe(h: dict) -> str:
    return f"`{h.get('command', '?')}` (host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('started', '?')})"


class RunLock:
    """`with RunLock(run_dir, "curate run"):` holds the run directory's lock, or raises
    `RunLocked`. Re-entrant within one process (a command that calls another keeps one lock)."""

    _held: dict[str, list] = {}  # real path of the lock file -> [RunLock, depth]
    _held_lock = threading.Lock()

    def __init__(self, run_dir: str | Path, command: str, echo=None, heartbeat_s: float = HEARTBEAT_S):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.command = command
        self.echo = echo or (lambda m: print(m, file=sys.stderr, flush=True))
        self.heartbeat_s = heartbeat_s
        self.token = secrets.token_hex(8)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._key: str | None = None

    # -- holding ------------------------------------------------------------------------------

    def acquire(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        key = os.path.realpath(self.path)
        with RunLock._held_lock:
            if key in RunLock._held:
                RunLock._held[key][1] += 1
                self._key = key
                return self
        me = _record(self.command, self.token)
        tmp = self.run_dir / f"{LOCK_NAME}.{me['host']}.{me['pid']}.{self.token}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me) + "\n")
            f.flush()
            os.fsync(f.fileno())
        try:
            for _ in range(100):
                if self._link(tmp):
                    break
                holder = self._holder()
                if holder is None:
                    continue  # released (or taken over) between our link and our read: try again
                why = self._stale(holder, tmp)
                if why is None:
                    raise RunLocked(self._refusal(holder, tmp))
                if self._break(holder, tmp):
                    self.echo(f"curate: taking over the lock of {self.run_dir} from {_describe(holder)}: {why}")
            else:
                raise RunLocked(f"could not take the lock {self.path} (it keeps changing hands)")
        finally:
            tmp.unlink(missing_ok=True)
        with RunLock._held_lock:
            RunLock._held[key] = [self, 1]
        self._key = key
        self._thread = threading.Thread(target=self._beat, name="curate-lock-heartbeat", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        with RunLock._held_lock:
            entry = RunLock._held.get(self._key)
            if entry is None:
                return
            entry[1] -= 1
            if entry[1] > 0:
                return
            del RunLock._held[self._key]
        owner: RunLock = entry[0]
        owner._stop.set()
        if owner._thread is not None:
            owner._thread.join()
        holder = owner._holder()
        if holder is not None and holder.get("token") == owner.token:
            owner.path.unlink(missing_ok=True)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)  # no times given: NFS sets the server's time
            except OSError:
                pass

    # -- taking ---------------------------------------------------------------------------------

    def _link(self, tmp: Path) -> bool:
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:
            # NFS can report a failed link that the server made (a lost reply): the link count tells.
            try:
                return os.stat(tmp).st_nlink == 2
            except OSError:
                return False

    def _holder(self) -> dict | None:
        text = _read_text(str(self.path))
        if text is None:
            return None
        try:
            h = json.loads(text)
        except json.JSONDecodeError:
            h = None
        return h if isinstance(h, dict) else {"token": text, "unreadable": True}

    def _age(self, probe: Path, path: Path | None = None) -> float | None:
        """Seconds since `path` (the lock file) was last modified, on the file server's clock."""
        try:
            os.utime(probe)
            return os.stat(probe).st_mtime - os.stat(path or self.path).st_mtime
        except OSError:
            return None

    def _stale(self, h: dict, probe: Path) -> str | None:
        """Why the holder `h` is gone, or None while it may be alive."""
        seen, why = _seen_from_here(h)
        if seen:
            return why
        age = self._age(probe)
        if age is not None and age > stale_after_s():
            return f"its heartbeat is {age:.0f} s old (stale after {stale_after_s():.0f} s)"
        return None

    def _refusal(self, h: dict, probe: Path) -> str:
        rule = ""
        if h.get("unreadable") or h.get("host") != socket.gethostname():
            age = self._age(probe)
            rule = (f"; it is taken over once its heartbeat is {stale_after_s():.0f} s old"
                    + (f" (now {age:.0f} s)" if age is not None else ""))
        who = "an unreadable lock" if h.get("unreadable") else _describe(h)
        return (f"run directory {self.run_dir} is in use by {who}{rule}; wait for it to finish "
                f"(lock file {self.path})")

    def _break(self, stale: dict, probe: Path) -> bool:
        """Remove the lock if it still is `stale`, holding the takeover guard; True if removed."""
        guard = self.run_dir / f"{LOCK_NAME}.takeover"
        try:
            os.close(os.open(guard, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            age = self._age(probe, guard)
            if age is not None and age > GUARD_STALE_S:
                guard.unlink(missing_ok=True)
            time.sleep(0.05)
            return False
        try:
            now = self._holder()
            if now is not None and now.get("token") == stale.get("token"):
                self.path.unlink(missing_ok=True)
                return True
            return False
        finally:
            guard.unlink(missing_ok=True)


def holds_run_lock(command: str):
    """Decorator for a command whose first argument is an existing run directory it writes into."""
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def run(run_dir, *args, **kwargs):
            if not Path(run_dir).is_dir():
                return fn(run_dir, *args, **kwargs)  # the command says that it does not exist
            with RunLock(run_dir, command):
                return fn(run_dir, *args, **kwargs)

        return run

    return wrap
