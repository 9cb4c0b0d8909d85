"""What `curate train` takes from the plan and what it writes beside metrics.jsonl."""

from __future__ import annotations

import json
import math

import pytest

from curate.training.cli import main as cli_main  # noqa: E402
from curate.training.config import TrainConfig  # noqa: E402
from curate.training.hf_io import init_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.metrics import read_metrics  # noqa: E402
from curate.training.synthetic import markov_docs, synthetic_run, write_tokens  # noqa: E402

SEQ, VOCAB = 32, 96


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("outputs")
    synthetic_run(d / "run", seq_len=SEQ, vocab_size=VOCAB, docs_per_group=60)
    init_model(d / "base", "tiny", vocab_size=VOCAB)
    return d


def _cfg(**kw):
    base = dict(batch_tokens=SEQ * 8, micro_batch_rows=4, log_every=1, eval_every=2, checkpoint_every=2,
                plots=False, holdout_rows=4)
    return TrainConfig(**{**base, **kw})


def _scalars(log_dir) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag} holds a step twice: {steps}"
        out[tag] = {e.step: e.value for e in events}
    return out


def _assert_same_as_jsonl(out):
    scalars = _scalars(out / "tensorboard")
    lines = read_metrics(out / "metrics.jsonl")
    expected = {(k, r["step"]): v for r in lines for k, v in r.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
    got = {(k, s): v for k, by_step in scalars.items() for s, v in by_step.items()}
    assert set(got) == set(expected)
    for key, v in expected.items():
        assert math.isclose(got[key], v, rel_tol=1e-6, abs_tol=1e-12), key  # event files hold float32
    return scalars


def test_tensorboard_gets_every_metric_under_the_same_name(run, tmp_path):
    train(run / "run", run / "base", config=_cfg(max_steps=4), out_dir=tmp_path, quiet=True)
    scalars = _assert_same_as_jsonl(tmp_path)
    for name in ("train/loss", "train/lr", "train/throughput(tok/s)", "time/data_loading(%)", "eval/loss/web",
                 "data/realised/phase1/web"):
        assert name in scalars
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4]
    train(run / "run", run / "base", config=_cfg(max_steps=1, tensorboard=False), out_dir=tmp_path / "off", quiet=True)
    assert (tmp_path / "off" / "metrics.jsonl").exists() and not (tmp_path / "off" / "tensorboard").exists()


def test_tensorboard_after_resume_holds_each_step_once(run, tmp_path):
    """Steps 3-4 run twice (as after a kill before the step-4 checkpoint): the resumed writer hides
    the first copies, as metrics.jsonl is cut back to the checkpoint's step."""
    import shutil

    train(run / "run", run / "base", config=_cfg(max_steps=4), out_dir=tmp_path, quiet=True)
    shutil.rmtree(tmp_path / "checkpoints" / "step-000004")
    train(run / "run", run / "base", config=_cfg(max_steps=6), out_dir=tmp_path, quiet=True)
    scalars = _assert_same_as_jsonl(tmp_path)
    assert sorted(scalars["train/loss"]) == [1, 2, 3, 4, 5, 6]


def test_step_size_comes_from_the_plan(tmp_path, capsys):
    """After `curate plan --batch-size B`, `curate train` needs no --set batch_tokens: the plan's
    tokens_per_step is the step; a value set in the config still wins."""
    from curate.mixtures.groups import group_stats
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import load_recipe

    recipe = load_recipe("natural")
    names = [g.name for g in recipe.groups]
    docs = {g: markov_docs(40, VOCAB, seed=i, mean_len=40) for i, g in enumerate(names)}
    write_tokens(tmp_path / "run", docs, SEQ, VOCAB)
    rows = [{"grp": g, "documents": 40, "chars": 0, "tokens": sum(len(x) + 1 for x in docs[g])} for g in names]
    plan = build_plan(recipe, group_stats(recipe.groups, rows), total_tokens=SEQ * 6 * 5, seq_len=SEQ, batch_size=6)
    (tmp_path / "run" / "plan.json").write_text(json.dumps(plan.to_dict()))
    init_model(tmp_path / "base", "tiny", vocab_size=VOCAB)
    args = ["train", str(tmp_path / "run"), "--base", str(tmp_path / "base"), "--max-steps", "2",
            "--set", "eval_every=0", "--set", "plots=false", "--set", "micro_batch_rows=3", "--set", "log_every=1"]
    assert cli_main(args + ["--out", str(tmp_path / "out")]) == 0
    assert "6 rows x 32 tokens per step (plan.json tokens_per_step)" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "train_config.json").read_text())["batch_tokens"] == SEQ * 6
    tokens = [r["train/tokens"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "train/loss" in r]
    assert tokens == [SEQ * 6, SEQ * 12]
    # An explicit batch_tokens is used as given (here it divides the plan's steps too).
    assert cli_main(args + ["--out", str(tmp_path / "out3"), "--set", f"batch_tokens={SEQ * 3}"]) == 0
    tokens = [r["train/tokens"] for r in read_metrics(tmp_path / "out3" / "metrics.jsonl") if "train/loss" in r]
    assert tokens == [SEQ * 3, SEQ * 6]


def test_console_lines_reach_stdout_once_under_ray_trains_print_patch(capsys, monkeypatch):
    """Ray Train workers replace `print` with one that logs each call and also echoes it when
    stdout is wrapped (as it is there), so a printed line reached the driver twice: the trainer's
    table looked printed by every rank. The trainer's console lines bypass `print`."""
    import builtins
    import logging
    import sys

    import ray.train.v2._internal.logging.patch_print as patch  # ray[train] is declared: a missing module fails
    from curate.training.build import console

    root = logging.getLogger()
    handler, level = logging.StreamHandler(sys.stdout), root.level  # as Ray Train forwards INFO records
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    monkeypatch.setattr(builtins, "print", patch.redirected_print)
    try:
        console("group  requested  available")
        print("via print")
    finally:
        monkeypatch.undo()
        root.removeHandler(handler)
        root.setLevel(level)
    out = capsys.readouterr().out.splitlines()
    assert out.count("via print") == 2, out  # the patch as it behaves in a worker
    assert out.count("group  requested  available") == 1
