"""`curate compare` and `curate search` end to end on real text: tiny Llama arms trained from one
base on Ray, evaluated on the run's held-out sets; a compare killed after its first arm resumes."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from curate.pipeline.commands.compare import compare  # noqa: E402
from curate.pipeline.commands.search import search  # noqa: E402
from curate.records.plan import Plan  # noqa: E402
from curate.search.mixture import proxy_plan  # noqa: E402
from tests.searchrun import SEQ, build_run, train_overrides  # noqa: E402
from tests.tinylm import code_texts, topic_texts  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("search")
    topics = topic_texts()
    run, base, plan = build_run(root, {"prose": topics[:40], "ref": topics[40:], "code": code_texts(40)})
    cfg = root / "train.yaml"
    cfg.write_text(yaml.safe_dump(train_overrides()))
    return root, run, base, plan, cfg


def _plans(root, plan):
    out = []
    for name, w in [("prose_heavy", {"prose": 0.8, "ref": 0.1, "code": 0.1}),
                    ("code_heavy", {"prose": 0.1, "ref": 0.1, "code": 0.8})]:
        p = root / f"{name}.json"
        p.write_text(json.dumps(proxy_plan(Plan.from_dict(plan), w, SEQ * 4 * 5, name).to_dict()))
        out.append(p)
    return out


def test_compare_killed_after_one_arm_resumes_with_the_same_table(setup, ray_session, tmp_path):
    root, run, base, plan, cfg = setup
    plans = _plans(root, plan)
    fresh = tmp_path / "fresh"
    shutil.copytree(run, fresh)
    kw = dict(config=cfg, eval_max_docs=2, echo=lambda s: None)
    full = compare(fresh, plans, base, seeds=1, executor="local", **kw)  # in this process, uninterrupted

    first = compare(run, plans, base, seeds=1, limit=1, executor="local", **kw)  # stops after one arm, as a kill would
    assert list(first["arms"]) == ["prose_heavy-s0"] and not first["complete"]
    marker = run / "compare" / "_done" / "prose_heavy-s0.json"
    before = marker.stat().st_mtime_ns
    said: list[str] = []
    second = compare(run, plans, base, seeds=1, config=cfg, eval_max_docs=2, echo=said.append)  # on Ray
    assert any(s == "training 1 arm(s): code_heavy-s0" for s in said)
    assert marker.stat().st_mtime_ns == before  # the finished arm was not trained again
    assert second["complete"] and second["summary"] == full["summary"]  # Ray actors and in-process alike
    assert (run / "compare" / "compare.png").stat().st_size > 0
    metrics = second["summary"]["prose_heavy"]
    assert {"prose/bpb", "ref/bpb", "code/bpb"} <= set(metrics)
    # more code in the mix, lower loss on held-out code than the prose-heavy mix
    assert second["summary"]["code_heavy"]["code/bpb"]["mean"] < metrics["code/bpb"]["mean"]
    # an arm is scored in windows of the context it was trained on (the plan's seq_len), not in
    # eval's default 1024-token windows, which reach positions the model never saw
    from curate.pipeline.commands.evaluation import eval_model
    again = eval_model(run / "compare" / "prose_heavy-s0" / "model", run=str(run), out=tmp_path / "ev",
                       block=SEQ, stride=SEQ // 2, max_docs=2, echo=lambda s: None)
    assert again["sets"]["code"]["bpb"] == pytest.approx(metrics["code/bpb"]["mean"])


def test_compare_reruns_an_arm_whose_plan_changed(setup, ray_session, tmp_path):
    root, run, base, plan, cfg = setup
    plans = _plans(root, plan)
    own = tmp_path / "run"
    shutil.copytree(run, own)
    if not (own / "compare" / "_done").is_dir():
        pytest.skip("needs the first test's arms")
    changed = tmp_path / "code_heavy.json"
    changed.write_text(json.dumps(proxy_plan(Plan.from_dict(plan), {"prose": 0.3, "ref": 0.3, "code": 0.4}, SEQ * 4 * 5,
                                             "c").to_dict()))
    said: list[str] = []
    compare(own, [plans[0], changed], base, seeds=1, config=cfg, eval_max_docs=2, echo=said.append, executor="local")
    assert "training 1 arm(s): code_heavy-s0" in said


@pytest.mark.slow
def test_search_end_to_end_writes_a_recipe_the_planner_takes(setup, ray_session):
    root, run, base, plan, cfg = setup
    r = search(run, base, "code", keep=["prose"], proxies=6, proxy_tokens=SEQ * 4 * 4, epsilon=0.02, config=cfg,
               candidates=2000, validate=True, eval_max_docs=2, echo=lambda s: None)
    out = run / "search"
    assert len(r["proxies"]) == 7 and r["complete"]  # 6 sampled + the natural mixture
    saved = json.loads((out / "search.json").read_text())
    assert saved["fit"]["code/bpb"]["lightgbm"]["folds"] == 7  # leave-one-out
    assert set(saved["fit"]["code/bpb"]) == {"lightgbm", "linear"}
    f = r["found"]
    assert abs(sum(f["weights"].values()) - 1) < 1e-9
    assert f["predicted"]["prose/bpb"] <= f["keep_limits"]["prose/bpb"] + 1e-12
    assert set(r["validation"]) == {"found", "natural"}
    assert (out / "search.png").stat().st_size > 0

    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import load_recipe
    from curate.search.mixture import plan_availability

    p = build_plan(load_recipe(out / "recipe.yaml"), plan_availability(Plan.from_dict(plan)), SEQ * 4 * 8, SEQ, batch_size=4)
    assert p.phases[0].weights == pytest.approx(f["weights"], abs=1e-5)
    # a rerun finds every proxy finished and trains nothing
    said: list[str] = []
    search(run, base, "code", keep=["prose"], proxies=6, proxy_tokens=SEQ * 4 * 4, epsilon=0.02, config=cfg,
           candidates=2000, eval_max_docs=2, echo=said.append)
    assert not any(s.startswith("training") for s in said)


def test_compare_cli_prints_the_table_and_refuses_a_missing_plan(setup, tmp_path, capsys):
    from curate.pipeline.cli import main

    root, run, base, plan, cfg = setup
    plans = _plans(root, plan)
    own = tmp_path / "run"
    shutil.copytree(run, own)
    args = ["compare", str(own), "--plans", *map(str, plans), "--base", str(base), "--seeds", "1",
            "--config", str(cfg), "--executor", "local", "--eval-max-docs", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prose_heavy" in out and "code/bpb" in out and "±" in out
    assert main([*args[:3], str(tmp_path / "nope.json"), *args[4:]]) == 2
    assert "nope.json does not exist" in capsys.readouterr().err
