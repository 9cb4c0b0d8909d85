"""A read-only filesystem for the catalog: DuckDB reads the run through it, and cannot write.

DuckDB's file-access settings do not tell reading from writing: a path in `allowed_paths` or
`allowed_directories` can be overwritten by `COPY ... TO` as easily as it is read. So the catalog
registers this fsspec filesystem under its own protocol, reads the run through it, and disables
DuckDB's local filesystem: every file DuckDB can reach is then opened for reading only, by this
code, whatever statement reaches the connection.

Files are read with `os.pread` at a position kept per thread: DuckDB's Python filesystem bridge
seeks and reads one handle from several threads, each under its own lock acquisition, so a
shared file position would let one thread read at another's offset.
"""

from __future__ import annotations

import os
import threading

from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

PROTOCOL = "curate-run"
PREFIX = PROTOCOL + "://"


def url(path) -> str:
    """The catalog's name for a local path."""
    return PREFIX + str(path)


class ReadOnlyError(PermissionError):
    pass


def _refuse(path) -> None:
    raise ReadOnlyError(f"the catalog is read-only: {path} cannot be written")


class _PreadFile:
    """A binary file open for reading; `seek`/`tell`/`read` act on this thread's position."""

    def __init__(self, path: str):
        self.name = path
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
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
        pos = self._pos()
        data = os.pread(self._fd, self.size - pos if n is None or n < 0 else n, pos)
        self._local.pos = pos + len(data)
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)

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
        if self._root is not None:
            real = os.path.realpath(local)
            if real != self._root and not real.startswith(self._root + os.sep):
                raise PermissionError(f"{local} leads outside {self._root} (to {real})")
        return local

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
        return _PreadFile(self._real(path))

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
