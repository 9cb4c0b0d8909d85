"""`curate plan` on run directories: counts from the catalog, measured tokens/char, CLI, outputs."""

from __future__ import annotations

import argparse
import json
import sysconfig
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from curate.mixtures.groups import parse_groups
from curate.mixtures.schema import validate_plan
from curate.pipeline.commands.plan import PlanError, plan, register
from curate.stages.shardio import write_parquet

GROUPS = [
    {"name": "hq", "where": "quality_bucket >= 4"},
    {"name": "code", "where": "domain = 'code'"},
    {"name": "docs", "where": "source = 'man' OR domain = 'docs'"},
]


def real_texts(n: int) -> list[str]:
    """Chunks of real text: standard library sources."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    out = []
    for f in files:
        text = f.read_text(errors="replace")
        out += [text[i:i + 3000] for i in range(0, min(len(text), 30000), 3000)]
        if len(out) >= n:
            return out[:n]
    return out


def make_run(tmp_path: Path, with_tokens: bool = False, n: int = 240) -> Path:
    """A run directory as the runner writes it: stages.json and Parquet shards of the doc table."""
    run = tmp_path / "run"
    texts = real_texts(n)
    domains = ["code", "docs", "legal", None]
    sources = ["python-stdlib", "man", "license"]
    for part in range(2):
        idx = range(part, len(texts), 2)
        cols = {
            "id": [f"doc{i}" for i in idx], "text": [texts[i] for i in idx],
            "source": [sources[i % 3] for i in idx], "url": [None for _ in idx],
            "date": pa.nulls(len(idx), pa.timestamp("us", tz="UTC")),
            "n_chars": [len(texts[i]) for i in idx],
            "domain": [domains[i % 4] for i in idx], "quality_bucket": [1 + i % 5 for i in idx],
        }
        if with_tokens:
            cols["n_tokens"] = [len(texts[i]) // 3 + i for i in idx]
        write_parquet(run / "tag" / f"part-{part:05d}-000.parquet", pa.table(cols))
    (run / "stages.json").write_text(json.dumps(["tag"]))
    return run


def recipe_file(tmp_path: Path, groups=GROUPS, **extra) -> Path:
    p = tmp_path / "r.yaml"
    p.write_text(yaml.safe_dump({"name": "t", "kind": "natural", "groups": groups, **extra}))
    return p


def printed_available(out: str) -> dict[str, int]:
    """The `available` column of the printed whole-plan table."""
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("whole plan"))
    got = {}
    for ln in lines[start + 2:]:
        if ln.strip().startswith("unassigned"):
            break
        parts = ln.split()
        got[parts[0]] = int(parts[4].replace(",", ""))
    return got


def direct_counts(run: Path, groups: list[dict], column: str) -> dict[str, int]:
    """First-match sums written without CASE: in group i and in none of the groups before it."""
    from curate.pipeline.catalog.db import connect

    con = connect(run)
    out = {}
    for i, g in enumerate(groups):
        earlier = "".join(f" AND NOT coalesce(({h['where']}), false)" for h in groups[:i])
        sql = f"SELECT coalesce(sum({column}), 0) FROM docs WHERE coalesce(({g['where']}), false){earlier}"
        out[g["name"]] = int(con.execute(sql).fetchone()[0])
    return out


def test_exact_counts_match_direct_sql(tmp_path, capsys):
    run = make_run(tmp_path, with_tokens=True)
    result = plan(run, recipe_file(tmp_path), tokens=100_000, seq_len=256)
    printed = printed_available(capsys.readouterr().out)
    expect = direct_counts(run, GROUPS, "n_tokens")
    assert printed == expect and all(v > 0 for v in expect.values())
    assert result["token_counts"] == "exact" and result["tokens_per_char"] is None
    validate_plan(json.loads((run / "plan.json").read_text()))
    assert (run / "plan.png").stat().st_size > 10_000
    # Documents in no group (domain legal/NULL with low quality, not man) are reported.
    assert result["unassigned"]["documents"] > 0


def test_estimated_counts_use_measured_ratio(tmp_path, capsys):
    import sentencepiece as spm

    run = make_run(tmp_path)
    train = tmp_path / "train.txt"
    train.write_text("\n".join(real_texts(400)[240:]))
    (run / "tokens").mkdir()
    spm.SentencePieceTrainer.train(input=str(train), model_prefix=str(run / "tokens" / "tokenizer"),
                                   vocab_size=600, model_type="unigram", minloglevel=2)
    result = plan(run, recipe_file(tmp_path), tokens=50_000, seq_len=256, sample_docs=10_000, plot=False)
    printed = printed_available(capsys.readouterr().out)
    texts = real_texts(240)
    sp = spm.SentencePieceProcessor(model_file=str(run / "tokens" / "tokenizer.model"))
    ratio = sum(len(x) for x in sp.encode(texts)) / sum(len(t) for t in texts)
    assert result["token_counts"] == "estimated"
    assert result["tokens_per_char"] == pytest.approx(ratio, rel=1e-12)
    assert result["tokens_per_char_source"].startswith("measured")
    chars = direct_counts(run, GROUPS, "n_chars")
    assert printed == {g: int(round(c * ratio)) for g, c in chars.items()}
    assert not (run / "plan.png").exists()


def test_default_ratio_without_tokenizer(tmp_path):
    run = make_run(tmp_path)
    result = plan(run, recipe_file(tmp_path), tokens=50_000, seq_len=256, plot=False, echo=None)
    assert result["tokens_per_char"] == 0.25 and result["tokens_per_char_source"] == "default"
    assert any("default ratio" in w for w in result["warnings"])


def test_bad_predicate_names_the_group(tmp_path):
    run = make_run(tmp_path)
    groups = GROUPS + [{"name": "fresh", "where": "crawl_year > 2020"}]
    with pytest.raises(PlanError, match="group 'fresh'.*crawl_year.*docs columns"):
        plan(run, recipe_file(tmp_path, groups), tokens=50_000, seq_len=256, plot=False, echo=None)


def test_infeasible_plan_refused_with_group(tmp_path):
    run = make_run(tmp_path, with_tokens=True)
    with pytest.raises(PlanError, match="group 'hq' is asked for .* tokens available"):
        plan(run, recipe_file(tmp_path), tokens=5_000_000, seq_len=256, plot=False, echo=None)


def test_cli_writes_plan_to_out(tmp_path, capsys):
    run = make_run(tmp_path, with_tokens=True)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "plans" / "p.json"
    args = parser.parse_args(["plan", str(run), "--recipe", str(recipe_file(tmp_path)), "--tokens", "2.048e5",
                              "--seq-len", "512", "--batch-size", "2", "--lr-start", "1e-4", "--out", str(out)])
    assert args.func(args) == 0
    p = json.loads(out.read_text())
    assert p["total_tokens"] == 204_800 and p["tokens_per_step"] == 1024 and p["schedule"]["lr_start"] == 1e-4
    assert out.with_suffix(".png").exists()
    assert "whole plan" in capsys.readouterr().out


def test_shipped_groups_on_a_real_run(tmp_path, ray_session, system_corpus, capsys):
    """The demo corpus through the real runner; shipped recipes' groups counted by the catalog."""
    from curate.mixtures.recipes import load_recipe
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "demo.yaml", inputs=[str(system_corpus)], out=str(tmp_path / "demo"))
    run_pipeline(cfg, quiet=True)
    run = Path(cfg.out)
    groups = [{"name": g.name, "where": g.where} for g in load_recipe("reuse").groups]
    result = plan(run, "reuse", tokens=None, seq_len=512, plot=False)
    printed = printed_available(capsys.readouterr().out)
    ratio = result["tokens_per_char"] or 1.0
    column = "n_tokens" if result["token_counts"] == "exact" else "n_chars"
    direct = direct_counts(run, groups, column)
    assert printed == {g: int(round(c * ratio)) if column == "n_chars" else c for g, c in direct.items()}
    assert sum(v > 0 for v in printed.values()) >= 3, printed
    assert parse_groups(groups)  # the shipped groups are well-formed


def test_curate_cli_refuses_infeasible_plan_with_exit_2(tmp_path, capsys):
    from curate.pipeline.cli import main

    run = make_run(tmp_path, with_tokens=True)
    rc = main(["plan", str(run), "--recipe", str(recipe_file(tmp_path)), "--tokens", "5e6", "--seq-len", "256"])
    err = capsys.readouterr().err
    assert rc == 2 and "group 'hq' is asked for" in err and "Traceback" not in err
    assert not (run / "plan.json").exists()
    rc = main(["plan", str(run), "--recipe", str(recipe_file(tmp_path)), "--tokens", "5e6", "--seq-len", "256",
               "--allow-redistribute", "--max-epochs", "1000", "--no-plot"])
    assert rc == 0 and json.loads((run / "plan.json").read_text())["max_epochs"] == 1000


def test_bad_step_or_budget_is_a_plan_error_not_a_traceback(tmp_path, capsys):
    from curate.pipeline.cli import main

    run = make_run(tmp_path, with_tokens=True)
    recipe = recipe_file(tmp_path)
    # No --tokens: the default budget (all available tokens, whole steps) must not divide by a
    # zero step before seq_len and batch_size are checked.
    for kw, field in [({"seq_len": 0}, "seq_len"), ({"seq_len": 256, "batch_size": 0}, "batch_size"),
                      ({"seq_len": 256, "tokens": 1.5e4 + 0.5}, "tokens"), ({"seq_len": 256, "tokens": float("inf")}, "tokens")]:
        with pytest.raises(PlanError, match=f"^{field}: must be a whole number > 0"):
            plan(run, recipe, plot=False, echo=None, **kw)
    rc = main(["plan", str(run), "--recipe", str(recipe), "--seq-len", "0", "--no-plot"])
    err = capsys.readouterr().err
    assert rc == 2 and "seq_len" in err and "Traceback" not in err
    result = plan(run, recipe, seq_len=256, batch_size=2, plot=False, echo=None)
    avail = sum(g["available_tokens"] for g in result["groups"])
    assert result["total_tokens"] == avail // 512 * 512 and result["total_tokens"] > 0


def test_given_ratio_is_reported_as_given(tmp_path):
    run = make_run(tmp_path)
    result = plan(run, recipe_file(tmp_path), tokens=50_000, seq_len=256, tokens_per_char=0.3, plot=False, echo=None)
    assert result["tokens_per_char"] == 0.3 and result["tokens_per_char_source"] == "given"
    notes = [w for w in result["warnings"] if "estimated from characters" in w]
    assert notes and all("given ratio of 0.3000" in w and "default" not in w for w in notes)


def test_cli_can_turn_redistribution_off(tmp_path):
    run = make_run(tmp_path, with_tokens=True)
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))

    def planned(recipe_redistributes: bool, *flags: str) -> bool:
        recipe = recipe_file(tmp_path, allow_redistribute=recipe_redistributes)
        args = parser.parse_args(["plan", str(run), "--recipe", str(recipe), "--tokens", "5e5", "--seq-len", "256",
                                  "--no-plot", "--max-epochs", "1000", *flags])
        assert args.func(args) == 0
        return json.loads((run / "plan.json").read_text())["allow_redistribute"]

    assert planned(True) is True and planned(False) is False  # no flag: the recipe's setting
    assert planned(True, "--no-allow-redistribute") is False
    assert planned(False, "--allow-redistribute") is True
    recipe = recipe_file(tmp_path, allow_redistribute=True)
    args = parser.parse_args(["plan", str(run), "--recipe", str(recipe), "--tokens", "5e6", "--seq-len", "256",
                              "--no-plot", "--no-allow-redistribute"])
    with pytest.raises(PlanError, match="group 'hq' is asked for"):
        args.func(args)


def test_reuse_qa_blend_holds_qa_on_a_catalog_whose_target_is_100x_larger(tmp_path, capsys):
    """One QA document against ~100 target documents: `curate plan --recipe reuse` still gives the
    QA blend its qa_share, keeps QA out of the general blend, and says so in plan.json, the printed
    summary and plan.png."""
    from curate.pipeline.cli import main

    run = make_run(tmp_path, with_tokens=True, n=300)
    groups = [{"name": "qa", "where": "id = 'doc0'"}, {"name": "target", "where": "source = 'python-stdlib'"},
              {"name": "general", "where": "TRUE"}]
    recipe = recipe_file(tmp_path, groups, kind="reuse", switch={"lr_ratio": 0.2}, role_weights={"target": 2.0},
                         roles={"qa": ["qa"], "target": ["target"], "general": ["general"]}, max_epochs=8.0,
                         schedule={"kind": "cosine", "lr_start": 1e-3, "lr_end_ratio": 0.01})
    assert main(["plan", str(run), "--recipe", str(recipe), "--tokens", "60000", "--seq-len", "128",
                 "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    p = json.loads((run / "plan.json").read_text())
    validate_plan(p)
    avail = {g["name"]: g["available_tokens"] for g in p["groups"]}
    assert avail["target"] >= 90 * avail["qa"]
    gb, qb = p["phases"]
    n = qb["end_token"] - qb["start_token"]
    assert gb["tokens"]["qa"] == 0 and qb["roles"]["qa"]["share"] == pytest.approx(0.12, abs=1 / n)
    qa = next(g for g in p["groups"] if g["name"] == "qa")
    assert 0 < qa["epochs"] <= qa["max_epochs"]
    assert f"summary: {p['summary']}" in out and f"QA: {qb['tokens']['qa']:,} tokens" in p["summary"]
    assert (run / "plan.png").stat().st_size > 10_000
