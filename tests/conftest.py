"""Shared fixtures: one local Ray per test session, one real-text corpus per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TQDM_DISABLE", "1")


@pytest.fixture(scope="session")
def ray_session():
    """A small local Ray shared by every test that needs one (never ray.init in a test)."""
    from pipeline.adapter import ray_session as session

    with session(num_cpus=2):
        yield


@pytest.fixture(scope="session")
def system_corpus(tmp_path_factory) -> Path:
    """A ~3 MB raw JSONL corpus of real text found on this machine."""
    from pipeline.corpus import build_system_corpus

    out = tmp_path_factory.mktemp("corpus") / "system.jsonl"
    build_system_corpus(out, max_mb=3.0)
    return out
