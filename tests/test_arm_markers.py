"""An arm's marker goes through the task ledger (stages/ledger.py) and is matched on the arm's
plan, seed, base and train-config digests: a marker written before arms used the ledger still
counts as finished, so an area trained then is not trained again."""

from __future__ import annotations

import json

from curate.records.marker import MARKER_VERSION, Marker
from curate.search.arms import Arm, expected, finished
from curate.stages import ledger


def test_arm_markers_old_and_new_match_on_the_arm_and_nothing_else(tmp_path):
    arm = Arm("a-s0", {"seq_len": 8, "groups": [{"name": "g"}]}, 0)
    done = {**expected(arm, "base1", "cfg1"), "steps": 3, "tokens": 96, "metrics": {"g/bpb": 1.5}}
    (tmp_path / "_done").mkdir()
    (tmp_path / "_done" / "a-s0.json").write_text(json.dumps(done, indent=2) + "\n")  # as written before
    assert finished(tmp_path, arm, "base1", "cfg1") == done
    assert finished(tmp_path, arm, "base2", "cfg1") is None
    assert finished(tmp_path, arm, "base1", "cfg2") is None
    assert finished(tmp_path, Arm("a-s0", arm.plan, 1), "base1", "cfg1") is None
    assert finished(tmp_path, Arm("a-s0", {**arm.plan, "seq_len": 16}, 0), "base1", "cfg1") is None

    ledger.write_marker(tmp_path, "a-s0", Marker.new(None, None, **done))
    assert json.loads((tmp_path / "_done" / "a-s0.json").read_text())["version"] == MARKER_VERSION
    assert finished(tmp_path, arm, "base1", "cfg1") == done
    (tmp_path / "_done" / "a-s0.json").write_text("{truncated")
    assert finished(tmp_path, arm, "base1", "cfg1") is None
