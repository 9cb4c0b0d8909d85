"""Shared fixtures: one local Ray per test session, one real-text corpus per session.

Session and module fixtures are shared by many tests: a test that would change what one made
works on a copy of it (as test_pack_run.py's `own_copy`), so no test depends on which others ran
before it, nor on whether they passed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A small local Ray shared by every test that needs one (never ray.init in a test)."""
    from curate.pipeline.running.adapter import ray_session as session

    with session(num_cpus=2):
        yield


@pytest.fixture(scope="session")
def system_corpus(tmp_path_factory) -> Path:
    """A ~3 MB raw JSONL corpus of real text that comes with Python (stdlib modules, its licence,
    pydoc topics): the same whatever else is installed, unlike `curate corpus system`, which also
    reads the machine's /usr/share/doc and man pages."""
    from curate.pipeline.commands.corpus import build_python_corpus

    out = tmp_path_factory.mktemp("corpus") / "system.jsonl"
    build_python_corpus(out, max_mb=3.0)
    return out
