"""Config validation names the offending field; every shipped config loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curate.pipeline.running.config import load_config
from curate.pipeline.errors import ConfigError
from curate.stages.base import BATCHES, GLOBAL, INPUTS, SHARDS, declared

REPO = Path(__file__).resolve().parents[1]
BASE = {"name": "x", "out": "runs/x", "inputs": [{"path": "data/x.jsonl"}]}


@pytest.mark.parametrize("patch, field", [
    ({"inputs": []}, "inputs"),
    ({"inputs": [{"path": "a", "format": "xml"}]}, "inputs[0].format"),
    ({"inputs": [{"path": "a", "fields": {"txt": "body"}}]}, "inputs[0].fields.txt"),
    ({"ingest": {"max_chars": 0}}, "ingest.max_chars"),
    ({"ingest": {"shard_docs": "many"}}, "ingest.shard_docs"),
    ({"ray": {"workers": 0}}, "ray.workers"),
    ({"stages": [{"kind": "no_such_stage"}]}, "stages[0].kind"),
    ({"stages": [{"name": "x"}]}, "stages[0]"),
    ({"stages": [{"kind": "minhash_dedup", "threshold": 1.5}]}, "stages[0].threshold"),
    ({"stages": [{"kind": "langid", "bogus": 1}]}, "stages[0].bogus"),
    ({"stages": [{"kind": "heuristics", "filters": [{"fliter": "gopher_quality"}]}]}, "stages[0].filters[0].fliter"),
    ({"stages": [{"kind": "domain", "taxonomy": [{"name": "a"}, {"name": "a"}]}]}, "stages[0].taxonomy"),
    ({"surprise": 1}, "surprise"),
])
def test_errors_name_the_field(patch, field):
    with pytest.raises(ConfigError) as e:
        load_config(data={**BASE, **patch})
    assert e.value.field == field
    assert field in str(e.value)


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


# Run configs: every configs/*.yaml except the trainer's train*.yaml (tests/test_train_loop.py
# loads those), the miniature's miniature.yaml (tests/test_miniature_config.py) and the recipes under
# configs/recipes/ (tests/test_mixtures_plan.py).
RUN_CONFIGS = sorted(p.name for p in (REPO / "configs").glob("*.yaml")
                     if not p.name.startswith("train") and p.name != "miniature.yaml")


def test_run_configs_are_found():
    assert {"demo.yaml", "demo_quality.yaml", "annotate.yaml", "dedup.yaml"} <= set(RUN_CONFIGS)


@pytest.mark.parametrize("path", RUN_CONFIGS)
def test_every_shipped_config_loads(path):
    cfg = load_config(REPO / "configs" / path)
    raw = yaml.safe_load((REPO / "configs" / path).read_text())
    # Nothing listed is lost or reordered, and every stage resolves to a class of its kind.
    assert [i.path for i in cfg.inputs] == [i["path"] for i in raw["inputs"]]
    assert [s.kind for s in cfg.stage_specs] == [s["kind"] for s in raw.get("stages") or []]
    # ... and has the method its declared step schedules (stages/base.py, `Declares.step`).
    method = {BATCHES: "process", SHARDS: "write_shard", GLOBAL: "run", INPUTS: "run_job"}
    assert all(callable(getattr(s.load(), method[declared(s.load()).step], None)) for s in cfg.stage_specs)


def test_cli_overrides():
    cfg = load_config(REPO / "configs" / "demo.yaml", inputs=["a.jsonl", "b.parquet"], out="runs/o", workers=3)
    assert [i.path for i in cfg.inputs] == ["a.jsonl", "b.parquet"] and cfg.out == "runs/o" and cfg.ray.workers == 3


def test_demo_quality_repeats_the_demo_stages():
    """Part 2 of the demo reuses part 1's shards only if its stages are the same, in order."""
    import yaml

    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    quality = yaml.safe_load((REPO / "configs" / "demo_quality.yaml").read_text())
    assert quality["stages"][:-1] == demo["stages"] and quality["stages"][-1]["kind"] == "quality"
    assert {k: v for k, v in quality.items() if k != "stages"} == {k: v for k, v in demo.items() if k != "stages"}
    preselect = yaml.safe_load((REPO / "configs" / "demo_preselect.yaml").read_text())
    assert preselect["stages"][:-1] == quality["stages"] and preselect["stages"][-1]["name"] == "preselect"
