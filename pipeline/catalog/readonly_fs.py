"""A read-only filesystem for the catalog: DuckDB reads the run through it, and cannot write.

DuckDB's file-access settings do not tell reading from writing: a path in `allowed_paths` or
`allowed_directories` can be overwritten by `COPY ... TO` as easily as it is read. So the catalog
registers this fsspec filesystem under its own protocol, reads the run through it, and disables
DuckDB's local filesystem: every file DuckDB can reach is then opened for reading only, by this
code, whatever statement reaches the connection.

Files are read with `os.pread` at a position kept per thread: DuckDB's Python filesystem bridge
seeks and reads one handle from several threads, each under its own lock acquisition, so a
shared file position would let one thread read at another's offset.

A handle holds no file descriptor between reads. DuckDB's bridge drops its handles without
calling `close()`, and a scan opens every file of a view (twice a file per query), so a
descriptor kept per handle ran a 1,500-shard run out of its 1,024 open files. Each read opens the
file again and checks that it is still the file checked at `open` (same device and inode), so a
file swapped in after the check is refused, not read.
"""

from __future__ import annotations

import os
import threading

from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

PROTOCOL = "curate-run"
PREFIX = PROTOCOL + "://"
# O_NONBLOCK: a FIFO named like a shard fails on its first read instead of hanging the catalog.
_READ = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK


def url(path) -> str:
    """The catalog's name for a local path."""
    return PREFIX + str(path)


class ReadOnlyError(PermissionError):
    pass


def _refuse(path) -> None:
    raise ReadOnlyError(f"the catalog is read-only: {path} cannot be written")


def _real_path(fd: int, path: str) -> str:
    """Where the open descriptor `fd` (opened from `path`) really is, symbolic links followed:
    Linux names it in /proc, which checks the file actually opened in one system call (a
    `realpath` walks the path component by component, and dominated the catalog's file access)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)


def _inside(real: str, root: str | None) -> bool:
    return root is None or real == root or real.startswith(root.rstrip(os.sep) + os.sep)


def resolve(path: str, root: str | None) -> str:
    """`path` after checking that its real location is inside `root` (PermissionError if not)."""
    try:
        fd = os.open(path, getattr(os, "O_PATH", os.O_RDONLY) | os.O_CLOEXEC)
    except OSError:  # missing: the caller's own call says so
        real = os.path.realpath(path)
    else:
        try:
            real = _real_path(fd, path)
        finally:
            os.close(fd)
    if not _inside(real, root):
        raise PermissionError(f"{path} leads outside {root} (to {real})")
    return path


class _PreadFile:
    """A binary file open for reading; `seek`/`tell`/`read` act on this thread's position."""

    def __init__(self, path: str, root: str | None = None):
        self.name = path
        fd = os.open(path, _READ)
        try:
            real = _real_path(fd, path)
            if not _inside(real, root):
                raise PermissionError(f"{path} leads outside {root} (to {real})")
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self.size, self._id = st.st_size, (st.st_dev, st.st_ino)
        self._local = threading.local()
        self.closed = False

    def _pos(self) -> int:
        return getattr(self._local, "pos", 0)

    def seek(self, offset: int, whence: int = 0) -> int:
        self._local.pos = offset + (0 if whence == 0 else self._pos() if whence == 1 else self.size)
        return self._local.pos

    def tell(self) -> int:
        return self._pos()

    def read(self, n: int = -1) -> bytes:
        if self.closed:
            raise ValueError(f"read of closed file {self.name}")
        pos = self._pos()
        fd = os.open(self.name, _READ)
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != self._id:
                raise OSError(f"{self.name} was replaced while the catalog read it")
            data = os.pread(fd, self.size - pos if n is None or n < 0 else n, pos)
        finally:
            os.close(fd)
        self._local.pos = pos + len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReadOnlyLocalFileSystem(AbstractFileSystem):
    """Local files under `curate-run://`, for reading only. Listing and metadata come from
    fsspec's local filesystem; every method that would change a file raises ReadOnlyError.
    With `root`, a path whose real location (symbolic links followed) is outside it is refused."""

    protocol = (PROTOCOL,)
    root_marker = "/"
    cachable = False

    def __init__(self, root: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self._local = LocalFileSystem()
        self._root = os.path.realpath(root) if root is not None else None

    def _real(self, path) -> str:
        local = self._strip_protocol(path)
        return local if self._root is None else resolve(local, self._root)

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        path = path[len(PREFIX):] if path.startswith(PREFIX) else path
        return LocalFileSystem._strip_protocol(path)

    def ls(self, path, detail=True, **kwargs):
        return self._local.ls(self._real(path), detail=detail, **kwargs)

    def info(self, path, **kwargs):
        return self._local.info(self._real(path), **kwargs)

    def modified(self, path):
        return self._local.modified(self._real(path))

    def _open(self, path, mode="rb", **kwargs):
        if mode != "rb":
            _refuse(path)
        return _PreadFile(self._strip_protocol(path), self._root)

    def mkdir(self, path, *args, **kwargs):
        _refuse(path)

    def makedirs(self, path, exist_ok=False):
        _refuse(path)

    def rmdir(self, path):
        _refuse(path)

    def rm(self, path, *args, **kwargs):
        _refuse(path)

    def rm_file(self, path):
        _refuse(path)

    def _rm(self, path):
        _refuse(path)

    def cp_file(self, path1, path2, **kwargs):
        _refuse(path2)

    def mv(self, path1, path2, *args, **kwargs):
        _refuse(path1)

    def touch(self, path, *args, **kwargs):
        _refuse(path)

    def pipe_file(self, path, *args, **kwargs):
        _refuse(path)

    def put_file(self, lpath, rpath, *args, **kwargs):
        _refuse(rpath)
