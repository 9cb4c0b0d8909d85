"""What `curate run` refuses before doing any work: inputs the workers cannot see, run directories
that are not on a POSIX file system, filter parameters datatrove would reject, missing inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.pipeline.running.config import load_config
from curate.pipeline.errors import ConfigError, CurateError
from curate.pipeline.running.runner import run_pipeline

REPO = Path(__file__).resolve().parents[1]


def _data(tmp_path: Path) -> Path:
    p = tmp_path / "in.jsonl"
    p.write_text(json.dumps({"text": "a document"}) + "\n")
    return p


def _cli(tmp_path: Path, cfg: dict, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    return subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "run", str(path), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_a_memory_url_input_is_refused_at_start(tmp_path):
    import fsspec

    with fsspec.open("memory://corpus/in.jsonl", "w") as f:  # visible to this process only
        f.write(json.dumps({"text": "a document"}) + "\n")
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.path.*memory://.*Ray workers .* cannot see it"):
        load_config(data={"out": str(tmp_path / "run"), "inputs": [{"path": "memory://corpus/in.jsonl"}]})
    with pytest.raises(ConfigError, match=r"inputs\[0\]\.path.*Protocol not known: nosuchfs"):
        load_config(data={"out": str(tmp_path / "run"), "inputs": [{"path": "nosuchfs://x/in.jsonl"}]})
    r = _cli(tmp_path, {"out": str(tmp_path / "run"), "inputs": [{"path": "memory://corpus/in.jsonl"}]})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "memory://" in r.stderr
    assert not (tmp_path / "run").exists()
    # Inputs a worker can open by URL still load.
    load_config(data={"out": str(tmp_path / "run"), "inputs": [{"path": f"file://{_data(tmp_path)}"}]})


def test_a_run_directory_url_other_than_s3_prefix_is_refused_at_start(tmp_path):
    # s3://bucket/prefix runs in a staging directory (tests/test_s3_rundir.py); other URLs do not.
    cfg = {"out": "runs/x", "inputs": [{"path": str(_data(tmp_path))}]}
    with pytest.raises(ConfigError, match=r"`out`.*gs://bucket/runs/x.*must be an s3:// URL"):
        load_config(data=cfg, out="gs://bucket/runs/x")
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    # From tmp_path, so a run that took the URL for a relative path would leave ./s3: there.
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "run", "c.json", "--out", "s3://bucket"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 2 and "Traceback" not in r.stderr and "needs a bucket and a prefix" in r.stderr
    assert not (tmp_path / "s3:").exists()
    # The runner itself never takes the URL for a local folder: only `curate run` stages it.
    with pytest.raises(CurateError, match=r"out: s3://bucket/runs/x is a URL"):
        run_pipeline(load_config(data=cfg, out="s3://bucket/runs/x"), executor="local")
    assert not Path("s3:").exists()


def test_a_typo_in_a_filter_parameter_is_a_config_error(tmp_path):
    stage = {"kind": "heuristics", "filters": [{"filter": "gopher_quality", "params": {"min_doc_wordz": 50}}]}
    cfg = {"out": str(tmp_path / "run"), "inputs": [{"path": str(_data(tmp_path))}], "stages": [stage]}
    with pytest.raises(ConfigError, match=r"stages\[0\]\.filters\[0\]\.params.*'min_doc_wordz'.*min_doc_words"):
        load_config(data=cfg)
    stage["filters"][0]["params"] = {"min_doc_words": "fifty"}
    with pytest.raises(ConfigError, match="min_doc_words' must be an integer or null"):
        load_config(data=cfg)
    stage["filters"][0] = {"filter": "gopher_quality", "non_english": "apply",
                           "non_english_params": {"min_stop_wordz": None}}
    with pytest.raises(ConfigError, match=r"filters\[0\]\.non_english_params.*'min_stop_wordz'"):
        load_config(data=cfg)
    # Parameters the filter takes load, including those left to the filter's own defaults.
    stage["filters"][0] = {"filter": "gopher_repetition", "params": {"dup_line_frac": 0.5, "top_n_grams": [[2, 0.2]]}}
    load_config(data=cfg)
    # The CLI says it in one line, and nothing ran.
    stage["filters"][0] = {"filter": "fineweb_quality", "params": {"line_punct_thrr": 0.1}}
    r = _cli(tmp_path, cfg)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "line_punct_thrr" in r.stderr
    assert not (tmp_path / "run").exists()


def test_a_missing_input_is_reported_before_the_run_directory_exists(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(data={"out": str(out), "inputs": [{"path": str(tmp_path / "nope.jsonl")}]})
    with pytest.raises(CurateError, match=r"inputs\[0\]\.path.*nope\.jsonl.*does not exist"):
        run_pipeline(cfg, quiet=True)
    assert not out.exists()
