"""The project's errors: `CurateError` and `ConfigError` live in the bottom layer
(`records/errors.py`) so every package raises the same ones; the catalog's `QueryError` is here."""

from curate.records.errors import ConfigError, CurateError

__all__ = ["ConfigError", "CurateError", "QueryError"]


class QueryError(CurateError):
    """A catalog query was refused or failed."""
