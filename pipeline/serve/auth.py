"""Bearer tokens for `curate serve`: a JSON file of hashed tokens, each with scopes and run prefixes.

A token is 32 random bytes (`secrets.token_urlsafe`), so its SHA-256 is as hard to invert as the
token is to guess: a slow password hash (scrypt) would only make every request slower. The file
holds no token itself, only `sha256:<hex>`; it is re-read when it changes, so `curate serve token
add` takes effect without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

from curate.pipeline.errors import CurateError

SCOPES = ("read", "submit", "admin")
TOKEN_PREFIX = "curate_"


@dataclass(frozen=True)
class Token:
    """One entry of the tokens file."""

    name: str
    """Who holds it: written to the audit log on each request."""
    hash: str
    """`sha256:<hex>` of the token."""
    scopes: list[str] = field(default_factory=lambda: ["read"])
    """What it may do: `read` (runs, catalog, job status and logs), `submit` (submit and stop jobs),
    `admin` (everything, on every run)."""
    prefixes: list[str] = field(default_factory=lambda: [""])
    """Run names it may touch start with one of these (`""`: every run)."""

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def allows_run(self, run: str) -> bool:
        return "admin" in self.scopes or any(run.startswith(p) for p in self.prefixes)


def hash_token(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _check(entry: dict, path: Path) -> Token:
    known = {f for f in Token.__dataclass_fields__}
    unknown = set(entry) - known
    if unknown or not {"name", "hash"} <= set(entry):
        raise CurateError(f"{path}: each token needs name and hash (and may have scopes, prefixes); got {sorted(entry)}")
    token = Token(**entry)
    bad = [s for s in token.scopes if s not in SCOPES]
    if bad or not token.scopes:
        raise CurateError(f"{path}: token {token.name!r}: scopes must be some of {', '.join(SCOPES)} (got {bad or 'none'})")
    if not str(token.hash).startswith("sha256:"):
        raise CurateError(f"{path}: token {token.name!r}: hash must be sha256:<hex>; create tokens with `curate serve token add`")
    return token


def read_tokens(path: Path) -> list[Token]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CurateError(f"cannot read the tokens file {path}: {e}") from None
    return [_check(e, path) for e in data.get("tokens", [])]


def _write(path: Path, tokens: list[Token]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # hashes only, still nobody else's business
    with os.fdopen(fd, "w") as f:
        json.dump({"tokens": [asdict(t) for t in tokens]}, f, indent=1)
    os.replace(tmp, path)


def add_token(path: Path, name: str, scopes: list[str], prefixes: list[str]) -> str:
    """Add a token to the file (created if missing); returns the token, which is stored nowhere."""
    if not name.strip() or name != name.strip() or any(c.isspace() or not c.isprintable() for c in name):
        raise CurateError(f"a token's name says who holds it in the audit log: give a name without spaces (got {name!r})")
    tokens = read_tokens(path) if path.exists() else []
    if any(t.name == name for t in tokens):
        raise CurateError(f"{path} already has a token named {name!r}")
    token = new_token()
    tokens.append(_check({"name": name, "hash": hash_token(token), "scopes": list(scopes),
                          "prefixes": list(prefixes) or [""]}, path))
    _write(path, tokens)
    return token


def ensure_tokens_file(path: Path) -> str | None:
    """Create the file with one admin token when it does not exist; returns that token (or None)."""
    if path.exists():
        return None
    return add_token(path, "admin", ["admin"], [""])


class TokenStore:
    """The tokens file, re-read when its modification time or size changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._by_hash: dict[str, Token] = {}
        self._reload()

    def _reload(self) -> None:
        st = self.path.stat()
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._by_hash = {t.hash: t for t in read_tokens(self.path)}
            self._stamp = stamp

    def lookup(self, token: str) -> Token | None:
        with self._lock:
            self._reload()
            wanted = hash_token(token)
            for h, t in self._by_hash.items():  # compare_digest: no timing hint of a near miss
                if hmac.compare_digest(h, wanted):
                    return t
        return None
