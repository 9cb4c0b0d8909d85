"""The trainer end to end on CPU: exact resume, LR at phase boundaries, outputs, CLI, refusals."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate.records.plan import Plan  # noqa: E402
from curate.training.cli import main as cli_main  # noqa: E402
from curate.training.config import TrainConfig, load_train_config  # noqa: E402
from curate.training.hf_io import init_model, load_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.metrics import read_metrics  # noqa: E402
from curate.training.optim import lr_at_tokens, plan_schedule  # noqa: E402
from curate.training.synthetic import synthetic_run  # noqa: E402

SEQ, VOCAB = 32, 128
# 3 phases of 8, 8 and 8 steps of 8 rows; the last phase starts in the LR decay.
BOUNDS = [SEQ * 8 * 8, SEQ * 8 * 16, SEQ * 8 * 24]
PHASES = [{"web": 0.7, "code": 0.3}, {"web": 0.4, "code": 0.3, "qa": 0.3}, {"qa": 0.5, "code": 0.5}]
SCHEDULE = {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": SEQ * 8 * 2}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("train")
    plan = synthetic_run(d / "run", seq_len=SEQ, vocab_size=VOCAB, docs_per_group=150, phases=PHASES,
                         boundaries=BOUNDS, schedule=SCHEDULE)
    init_model(d / "base", "tiny", vocab_size=VOCAB, seed=1)
    return d, plan


def _cfg(**kw):
    base = dict(batch_tokens=SEQ * 8, micro_batch_rows=4, log_every=1, eval_every=6, checkpoint_every=0,
                keep_checkpoints=5, plots=False, holdout_rows=4)
    return TrainConfig(**{**base, **kw})


def _losses(out: Path) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(out / "metrics.jsonl") if "train/loss" in r}


@pytest.fixture(scope="module")
def full(setup):
    """An uninterrupted 12-step run to compare resumed runs against."""
    d, _ = setup
    train(d / "run", d / "base", config=_cfg(max_steps=12), out_dir=d / "full", quiet=True)
    return d / "full"


def test_resume_is_bit_identical_to_an_uninterrupted_run(setup, full):
    d, _ = setup
    part = d / "part"
    train(d / "run", d / "base", config=_cfg(max_steps=5), out_dir=part, quiet=True)
    assert sorted(_losses(part)) == [1, 2, 3, 4, 5]
    # A fresh trainer finds step-000005 in the out folder and carries on.
    res = train(d / "run", d / "base", config=_cfg(max_steps=12), out_dir=part, quiet=True)
    assert res["steps"] == 12
    a, b = _losses(full), _losses(part)
    assert sorted(b) == list(range(1, 13)), "metrics.jsonl holds each step once"
    assert [a[s] for s in range(6, 13)] == [b[s] for s in range(6, 13)]  # bit-identical floats
    ma, mb = load_model(full / "model"), load_model(part / "model")
    for (k, x), (_, y) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert (x == y).all(), k
    assert a[12] < a[1], "the loss falls on learnable data"
    # Run again once finished: nothing is left to train, and it reports the last step's loss.
    again = train(d / "run", d / "base", config=_cfg(max_steps=12), out_dir=part, quiet=True)
    assert again["steps"] == 12 and again["loss"] == res["loss"] == b[12]


def test_resume_against_a_changed_plan_is_refused(setup, tmp_path):
    """A resume continues the plan it started with: new weights, LR or phases are refused by name."""
    d, plan = setup
    out = tmp_path / "out"
    train(d / "run", d / "base", config=_cfg(max_steps=2, eval_every=0), out_dir=out, quiet=True)

    def changed(edit):
        p = json.loads(json.dumps(plan))
        edit(p)
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(p))
        return path

    def swap(p):
        p["phases"][0]["weights"]["web"], p["phases"][0]["weights"]["code"] = 0.3, 0.7
    cases = {"phases": swap,
             "schedule": lambda p: p["schedule"].update(lr_start=1e-3),
             "groups": lambda p: p["groups"][0].update(max_epochs=1.5)}
    for what, edit in cases.items():
        with pytest.raises(ValueError, match=rf"different plan.json \({what} changed\)"):
            train(d / "run", d / "base", plan_path=changed(edit), config=_cfg(max_steps=4, eval_every=0),
                  out_dir=out, quiet=True)

    # Two phases instead of three: the sampler state no longer fits.
    from curate.training.synthetic import write_plan

    write_plan(tmp_path, PHASES[:2], BOUNDS[:2], SEQ, SCHEDULE, {g["name"]: g["available_tokens"] for g in plan["groups"]})
    with pytest.raises(ValueError, match="different plan.json"):
        train(d / "run", d / "base", plan_path=tmp_path / "plan.json", config=_cfg(max_steps=4, eval_every=0),
              out_dir=out, quiet=True)
    # The unchanged plan still resumes.
    res = train(d / "run", d / "base", config=_cfg(max_steps=3, eval_every=0), out_dir=out, quiet=True)
    assert res["steps"] == 3


def test_sigkill_mid_run_then_resume_matches_uninterrupted(setup, full, tmp_path):
    d, _ = setup
    out = tmp_path / "killed"
    cfg = tmp_path / "t.yaml"
    fields = dict(batch_tokens=SEQ * 8, micro_batch_rows=4, log_every=1, eval_every=6, checkpoint_every=2,
                  keep_checkpoints=5, plots=False, holdout_rows=4, max_steps=12)
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
    cmd = [sys.executable, "-m", "curate.training.cli", "train", str(d / "run"), "--base", str(d / "base"),
           "--config", str(cfg), "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not (out / "checkpoints" / "step-000004").exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    from curate.training.checkpoint import latest_checkpoint

    killed_at = latest_checkpoint(out)
    assert killed_at is not None and killed_at.name < "step-000012", "the kill landed mid-run"
    res = train(d / "run", d / "base", config=TrainConfig(**fields), out_dir=out, quiet=True)
    assert res["steps"] == 12
    a, b = _losses(full), _losses(out)
    assert sorted(b) == list(range(1, 13)) and all(a[s] == b[s] for s in a)
    assert not list((out / "checkpoints").glob(".tmp-*"))


def test_lr_at_every_phase_boundary_equals_the_plan(setup, tmp_path):
    d, plan = setup
    schedule = plan_schedule(Plan.from_dict(plan))
    for ph in plan["phases"]:
        assert math.isclose(lr_at_tokens(schedule, ph["start_token"]), ph["lr_start"], rel_tol=1e-12)
        assert math.isclose(lr_at_tokens(schedule, ph["end_token"]), ph["lr_end"], rel_tol=1e-12)
    res = train(d / "run", d / "base", config=_cfg(eval_every=8, plots=True), out_dir=tmp_path, quiet=True)
    assert res["steps"] == 24
    lines = read_metrics(tmp_path / "metrics.jsonl")
    by_step = {r["step"]: r for r in lines if "train/lr" in r}
    for ph in plan["phases"]:
        first_step = ph["start_token"] // (SEQ * 8) + 1  # the LR logged at a step is the LR it ran with
        assert math.isclose(by_step[first_step]["train/lr"], ph["lr_start"], rel_tol=1e-12)
        assert by_step[first_step]["train/phase"] == plan["phases"].index(ph)
    keys = set().union(*lines)
    for k in ("train/loss", "train/lr", "train/tokens", "train/throughput(tok/s)", "train/mfu(%)",
              "time/data_loading(%)", "eval/loss/web", "eval/loss/qa", "data/realised/phase3/qa"):
        assert k in keys
    evals = [r for r in lines if "time/eval(s)" in r]
    assert [r["step"] for r in evals] == [8, 16, 24] and all(r["time/eval(s)"] > 0 for r in evals)
    assert [r["step"] for r in lines if "time/checkpoint(s)" in r] == [24]
    mix = json.loads((tmp_path / "mixture.json").read_text())
    for real, ph in zip(mix, plan["phases"]):
        assert all(abs(real["realised"][g] - w) <= 0.01 for g, w in ph["weights"].items())
    assert (tmp_path / "loss.png").stat().st_size > 1000 and (tmp_path / "lr.png").stat().st_size > 1000
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert ckpts == ["step-000024"]


def test_cli_init_model_and_train(setup, tmp_path, capsys):
    d, _ = setup
    from curate.pipeline.cli import main as curate_main  # `curate` dispatches to training.cli

    assert curate_main(["init-model", str(tmp_path / "base"), "--run", str(d / "run")]) == 0
    assert load_model(tmp_path / "base").config.vocab_size == VOCAB
    cfg = tmp_path / "t.yaml"
    cfg.write_text("batch_tokens: 256\nmicro_batch_rows: 8\nplots: false\neval_every: 0\n")
    assert cli_main(["train", str(d / "run"), "--base", str(tmp_path / "base"), "--config", str(cfg),
                     "--max-steps", "3", "--out", str(tmp_path / "out"), "--set", "log_every=3"]) == 0
    printed = capsys.readouterr().out
    assert "requested" in printed and "available" in printed  # the supply table comes first
    assert json.loads(printed[printed.index("{"):])["steps"] == 3
    assert curate_main(["train", str(d / "run"), "--base", str(tmp_path / "missing")]) == 2  # one-line error


def test_activation_checkpointing_gives_the_same_losses(setup, full, tmp_path):
    d, _ = setup
    train(d / "run", d / "base", config=_cfg(max_steps=3, activation_checkpointing=True), out_dir=tmp_path, quiet=True)
    a, b = _losses(full), _losses(tmp_path)
    assert all(abs(a[s] - b[s]) <= 1e-6 * a[s] for s in (1, 2, 3))


def test_vocab_mismatch_fails_clearly(setup, tmp_path):
    d, _ = setup
    init_model(tmp_path / "small", "tiny", vocab_size=64)
    with pytest.raises(ValueError, match=r"vocabulary of 128 ids.*vocab_size 64"):
        train(d / "run", tmp_path / "small", config=_cfg(max_steps=1), out_dir=tmp_path / "o", quiet=True)


def test_malformed_plans_are_refused_before_training(setup, tmp_path):
    """Plan.load validates the whole plan: a clear ValueError naming the problem, never a KeyError mid-run."""
    from curate.records.plan import PlanValidationError

    def read_plan(path):
        return Plan.load(path).to_dict()

    d, plan = setup

    def bad(edit):
        p = json.loads(json.dumps(plan))
        edit(p)
        path = tmp_path / "plan.json"
        path.write_text(json.dumps(p))
        return path

    assert Plan.load(d / "run" / "plan.json") == Plan.from_dict(plan)  # synthetic plans are valid plans
    with pytest.raises(ValueError, match="schedule"):
        read_plan(bad(lambda p: p.pop("schedule")))
    with pytest.raises(ValueError, match="phase 'phase1' must give weights and tokens"):
        # A group with weight > 0 that plan["groups"] does not list would never be sampled.
        read_plan(bad(lambda p: p["groups"].pop(0)))
    with pytest.raises(ValueError, match="expected to start at"):
        read_plan(bad(lambda p: p["phases"][1].update(start_token=p["phases"][1]["start_token"] + SEQ)))
    path = bad(lambda p: p["phases"][0]["weights"].update(web=0.9))
    with pytest.raises(ValueError, match=r"plan.json: .*weights add up to"):
        train(d / "run", d / "base", plan_path=path, config=_cfg(max_steps=1), out_dir=tmp_path / "o", quiet=True)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_plan(tmp_path / "broken.json")
    with pytest.raises(PlanValidationError, match="does not exist: run `curate plan` first"):
        read_plan(tmp_path / "missing.json")


def test_batch_geometry_and_config_errors(setup, tmp_path):
    d, _ = setup
    with pytest.raises(ValueError, match="multiple of the plan's seq_len"):
        train(d / "run", d / "base", config=_cfg(batch_tokens=100), out_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="less than one step"):
        train(d / "run", d / "base", config=_cfg(batch_tokens=SEQ * 8 * 100), out_dir=tmp_path, quiet=True)
    with pytest.raises(ValueError, match="dtype"):
        TrainConfig(dtype="fp16")
    with pytest.raises(ValueError, match="unknown field 'lr'"):
        load_train_config(None, {"lr": 1.0})


def test_phase_boundary_inside_a_step_is_refused(setup, tmp_path):
    """Boundaries at 8, 16 and 24 steps of 8 rows do not fall on steps of 24 rows: refused, naming both numbers."""
    d, _ = setup
    with pytest.raises(ValueError, match=r"phase 'phase1' ends at token 2,048, which is not a multiple of "
                                         r"batch_tokens \(768\).*--batch-size 24"):
        train(d / "run", d / "base", config=_cfg(batch_tokens=SEQ * 24), out_dir=tmp_path, quiet=True)
    synthetic_run(tmp_path / "run", seq_len=SEQ, vocab_size=VOCAB, docs_per_group=40, phases=PHASES[:1],
                  boundaries=[SEQ * 8 * 4 + SEQ])
    with pytest.raises(ValueError, match=r"the plan ends at token 1,056.*batch_tokens \(256\)"):
        train(tmp_path / "run", d / "base", config=_cfg(), out_dir=tmp_path / "o", quiet=True)


def test_leftovers_of_a_killed_export_are_removed_on_start(setup, tmp_path):
    d, _ = setup
    for name in (".tmp-model.abc123", ".old-model.4242", "checkpoints/.tmp-step-000002.xyz"):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "model.safetensors").write_bytes(b"partial")
    train(d / "run", d / "base", config=_cfg(max_steps=1, eval_every=0), out_dir=tmp_path, quiet=True)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    assert not list((tmp_path / "checkpoints").glob(".tmp-*")) and (tmp_path / "model" / "config.json").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-CUDA message")
def test_device_cuda_without_cuda_is_a_clear_error(setup, tmp_path):
    d, _ = setup
    with pytest.raises(ValueError, match="device is 'cuda' but torch sees no CUDA device"):
        train(d / "run", d / "base", config=_cfg(max_steps=1, device="cuda"), out_dir=tmp_path, quiet=True)


def test_shipped_train_configs_load():
    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted(root.glob("train*.yaml"))
    assert paths, "configs/train.yaml is shipped"
    for p in paths:
        load_train_config(p)


@pytest.mark.parametrize("recipe_name", ["upsample-end", "reuse"])
def test_follows_a_plan_from_the_real_planner(tmp_path, recipe_name):
    """A plan.json written by mixtures.planner (WSD / multi-phase recipes) drives the trainer: the LR
    each phase starts with is the plan's, and each phase's realised mix is within one row per group."""
    from curate.mixtures.groups import group_stats
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import load_recipe
    from curate.training.synthetic import markov_docs, write_tokens

    recipe = load_recipe(recipe_name)
    names = [g.name for g in recipe.groups]
    docs = {g: markov_docs(60, VOCAB, seed=i, mean_len=40) for i, g in enumerate(names)}
    write_tokens(tmp_path / "run", docs, SEQ, VOCAB)
    rows = [{"grp": g, "documents": 60, "chars": 0, "tokens": sum(len(x) + 1 for x in docs[g])} for g in names]
    plan = build_plan(recipe, group_stats(recipe.groups, rows), total_tokens=SEQ * 8 * 20, seq_len=SEQ,
                      batch_size=8).to_dict()
    (tmp_path / "run" / "plan.json").write_text(json.dumps(plan))
    init_model(tmp_path / "base", "tiny", vocab_size=VOCAB)
    res = train(tmp_path / "run", tmp_path / "base", config=_cfg(eval_every=0), out_dir=tmp_path / "out", quiet=True)
    assert res["steps"] == 20
    lrs = {r["step"]: r["train/lr"] for r in read_metrics(tmp_path / "out" / "metrics.jsonl") if "train/lr" in r}
    assert len(plan["phases"]) >= 2
    for ph in plan["phases"]:
        assert math.isclose(lrs[ph["start_token"] // (SEQ * 8) + 1], ph["lr_start"], rel_tol=1e-9)
    mix = json.loads((tmp_path / "out" / "mixture.json").read_text())
    for real, ph in zip(mix, plan["phases"]):
        n = real["rows"]
        assert n == (ph["end_token"] - ph["start_token"]) // SEQ
        assert all(abs(real["realised"][g] * n - w * n) <= 1.0 + 1e-9 for g, w in ph["weights"].items())
