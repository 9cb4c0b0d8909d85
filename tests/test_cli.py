"""Every subcommand has --help; the cluster config is a real Ray launcher config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from curate.pipeline.cli import build_parser

REPO = Path(__file__).resolve().parents[1]


def _subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return sorted(action.choices)


def test_core_commands_exist():
    assert {"corpus", "run", "query", "stats"} <= set(_subcommands())


@pytest.mark.parametrize("cmd", _subcommands())
def test_every_subcommand_has_help(cmd):
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", cmd, "--help"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "usage: curate " + cmd in r.stdout
    assert len(r.stdout.splitlines()) > 3


def test_ray_cluster_yaml_is_a_launcher_config():
    cfg = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    assert {"cluster_name", "provider", "available_node_types", "head_node_type", "setup_commands"} <= set(cfg)
    assert cfg["head_node_type"] in cfg["available_node_types"]
    assert any("scripts/setup.sh" in c for c in cfg["setup_commands"])


def test_stats_command_summarises_a_run(system_corpus, tmp_path, ray_session):
    from curate.pipeline.commands.core import stats_text
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    cfg = load_config(data={"name": "s", "out": str(tmp_path / "run"), "inputs": [{"path": str(system_corpus)}],
                            "ingest": {"max_chars": 50_000}})
    (rep,) = run_pipeline(cfg, quiet=True)
    text = stats_text(cfg.out)
    assert f"documents: {rep.stats.totals['kept']:,}" in text
    assert "python-stdlib" in text and "too_long" in text  # the cap quarantines the long documents
    from curate.pipeline.commands.core import report

    page = report(cfg.out).read_text()
    assert page.count("<img") >= 2 and f"documents: {rep.stats.totals['kept']:,}" in page


def test_bad_command_input_is_a_clear_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "run", str(tmp_path / "missing.yaml")],
                       capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "stats", str(tmp_path)], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 2 and "not a run directory" in r.stderr
