"""The bottom layer's records: counts round-trip the marker JSON, stats sum it, config errors
name the field in the run config and the train config alike."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from curate.records.counts import Counts, StageStats
from curate.records.errors import ConfigError, CurateError
from curate.training.config import load_train_config


def test_counts_round_trip_and_conservation():
    d = {"in": 10, "kept": 6, "rejected": 3, "quarantined": 1, "rejected_by_reason": {"a": 2, "b": 1},
         "decontaminate_matches": {"set:x": 4}, "pii_replaced": 7}
    c = Counts.from_dict(d)
    assert c.to_dict() == d and list(c.to_dict()) == list(d)
    assert c.balanced()
    bad = Counts.from_dict({**d, "kept": 5})
    assert not bad.balanced() and "10 in != 5 kept" in bad.imbalance()


def test_stage_stats_sum_every_key_per_key():
    markers = [{"seconds": 1.0004, "bytes_in": 5, "bytes_out": 3,
                "counts": {"in": 3, "kept": 2, "rejected": 1, "rejected_by_reason": {"a": 1}, "n": 2}},
               {"seconds": 2.0, "bytes_in": 7, "bytes_out": 1,
                "counts": {"in": 4, "kept": 4, "rejected": 0, "rejected_by_reason": {}, "n": 1, "m": {"k": 3}}}]
    s = StageStats.of("x", markers).to_dict()
    assert s == {"stage": "x", "shards": 2, "seconds": 3.0, "bytes_in": 12, "bytes_out": 4, "in": 7, "kept": 6,
                 "rejected": 1, "rejected_by_reason": {"a": 1}, "n": 3, "m": {"k": 3}, "quarantined": 0}
    assert StageStats.of("x", markers).counts.balanced()


def test_one_builder_names_the_field_for_the_train_config_too():
    with pytest.raises(ConfigError) as e:
        load_train_config(None, {"eval_every": "often"})
    assert e.value.field == "eval_every" and isinstance(e.value, CurateError) and isinstance(e.value, ValueError)
    with pytest.raises(ConfigError) as e:
        load_train_config(None, {"compile": "yes"})
    assert e.value.field == "compile"


@dataclass
class Inner:
    x: float = 0.0


@dataclass
class Outer:
    inner: Inner | None = None
    rate: float = 1.0


def test_one_builder_serves_recipes_nested_optional_fields_and_bools_for_numbers():
    """records.typed builds recipes too: a nested error under an optional field names the nested
    field, a bool is not a number, and a field the recipe's kind does not read is refused."""
    from curate.records.typed import build

    with pytest.raises(ConfigError) as e:
        build(Outer, {"inner": {"x": [1]}}, "cfg")
    assert e.value.field == "cfg.inner.x" and e.value.message.startswith("expected a number")
    with pytest.raises(ConfigError) as e:
        build(Outer, {"rate": True}, "cfg")
    assert e.value.field == "cfg.rate"


def _planned() -> dict:
    from curate.mixtures.groups import Availability, GroupStats
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import load_recipe

    recipe = load_recipe("reuse")
    groups = [GroupStats(name=g.name, where=g.where, documents=10 * (i + 1), chars=1000 * (i + 1),
                         available_tokens=400_000 * (i + 1)) for i, g in enumerate(recipe.groups)]
    avail = Availability(groups=groups, token_counts="estimated", tokens_per_char=0.25,
                         tokens_per_char_source="default", unassigned_documents=0, unassigned_tokens=0)
    return build_plan(recipe, avail, 1_000_000, 256, batch_size=2).to_dict()


def test_plan_record_round_trips_the_planners_plan_json():
    """The planner writes plan.json through records.plan.Plan; reading it back gives the same JSON,
    key order included, and a plan without the optional fields gains none on the way through."""
    import json

    from curate.mixtures.schema import validate_plan
    from curate.records.plan import Plan

    planned = _planned()
    validate_plan(planned)
    plan = Plan.from_dict(json.loads(json.dumps(planned)))
    assert json.dumps(plan.to_dict()) == json.dumps(planned)
    assert plan.schedule.total_tokens == plan.total_tokens and plan.phases[-1].end_token == plan.total_tokens
    assert plan.used_groups() == sorted({g for p in planned["phases"] for g, w in p["weights"].items() if w > 0})
    first_draft = json.loads(json.dumps(planned))
    for key in ("recipe_kind", "batch_size", "tokens_per_step", "total_steps", "redistributed", "warnings"):
        first_draft.pop(key)
    for g in first_draft["groups"]:
        g.pop("chars")
    first_draft["phases"][0].pop("start_step")
    first_draft["extra_field_the_schema_allows"] = 1
    validate_plan(first_draft)
    again = Plan.from_dict(first_draft).to_dict()
    first_draft.pop("extra_field_the_schema_allows")
    assert again == first_draft
    validate_plan(again)


def test_plan_record_errors_name_the_field():
    from curate.records.plan import Plan

    planned = _planned()
    planned["phases"][1]["end_token"] = "soon"
    with pytest.raises(ConfigError) as e:
        Plan.from_dict(planned)
    assert e.value.field == "plan.phases[1].end_token"
    planned = _planned()
    planned["schedule"]["lr_end"] = planned["schedule"]["lr_start"] * 2
    with pytest.raises(ConfigError) as e:
        Plan.from_dict(planned)
    assert e.value.field == "plan.schedule.lr_end"


def test_marker_record_round_trips_what_the_ledger_writes_and_reads_damaged_markers(tmp_path):
    """The task ledger writes `Marker` records and reads them back: a marker as written
    round-trips, and a marker damaged on disk (a mangled `files` entry, a version of the wrong
    type, not JSON) means "redo", never a crash."""
    import json

    from curate.records.marker import Marker
    from curate.stages import ledger, shardio

    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "part-0.parquet").write_bytes(b"shard bytes")
    counts = {"in": 3, "kept": 2, "rejected": 1, "quarantined": 0, "rejected_by_reason": {"x": 1}}
    written = ledger.write_marker(tmp_path / "s", "part-0",
                                  Marker.new("fp", "ch", ["part-0.parquet"], counts, stage="s", bytes_in=5, seconds=0.5))
    on_disk = json.loads(ledger.marker_path(tmp_path / "s", "part-0").read_text())
    assert on_disk == written.to_dict() and on_disk["counts"] == counts and on_disk["task"] == "part-0"
    assert ledger.read_marker(tmp_path / "s", "part-0") == written
    assert written.counts.balanced() and written.files["part-0.parquet"].bytes == 11 and written.extra["stage"] == "s"
    assert written.matches("fp", "ch") and not written.matches("fp", "other")
    assert ledger.current(tmp_path / "s", "part-0", "fp", "ch") == written
    assert ledger.current(tmp_path / "s", "part-0", "fp", "other") is None
    assert ledger.damage(tmp_path / "s", written) is None
    mangled = Marker.from_dict({**on_disk, "files": {"part-0.parquet": "not an entry"}})
    assert "part-0.parquet" in ledger.damage(tmp_path / "s", mangled)
    assert ledger.recorded_digest(tmp_path / "s", written, tmp_path / "s" / "part-0.parquet") == \
        shardio.file_digest(tmp_path / "s" / "part-0.parquet")
    assert Marker.from_dict({**on_disk, "version": [3]}).old_version() == "marker version [3]"
    assert Marker.from_dict({**on_disk, "version": 2}).old_version() == "marker version 2, before shard digests"
    assert not shardio.marker_matches(["not", "a", "marker"], "fp", "ch")
    (tmp_path / "s" / "part-0.parquet").write_bytes(b"other bytes")  # same size, other bytes
    assert ledger.current(tmp_path / "s", "part-0", "fp", "ch") is None
    ledger.marker_path(tmp_path / "s", "part-0").write_text("{not json")
    assert ledger.read_marker(tmp_path / "s", "part-0") is None
