"""bench/recipe_miniature.py at a tiny scale on text that comes with Python: pydoc topics are the
target domain, QA pairs are made from them (the answer: a topic's opening words; the other
choices: the same words reordered), standard-library source is the general pool. Two arms, two
seeds, a few steps each; the properties checked hold for any corpus: held-out answers
decontaminated, one base for every arm, a row per arm, paired differences, the report's files,
and a rerun that trains nothing."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _corpus(tmp: Path) -> tuple[Path, Path]:
    from pydoc_data import topics

    from curate.pipeline.commands.corpus import build_python_corpus

    corpus = tmp / "python.jsonl"
    build_python_corpus(corpus, max_mb=0.5)
    qa = tmp / "qa.jsonl"
    with open(qa, "w") as f:
        for name in sorted(topics.topics)[:40]:
            words = topics.topics[name].split()
            if len(words) >= 30:
                answer = " ".join(words[:30])
                # the distractors: the same words in other orders (never seen in training either)
                choices = [answer, " ".join(words[:30][::-1]), " ".join(words[1:30:2] + words[0:30:2])]
                f.write(json.dumps({"id": name, "question": f"What does the language reference say about {name}?",
                                    "answer": answer, "choices": choices}) + "\n")
    return corpus, qa


@pytest.fixture(scope="module")
def miniature(tmp_path_factory, ray_session):
    from bench.miniature.config import load
    from bench.recipe_miniature import run_miniature

    tmp = tmp_path_factory.mktemp("miniature")
    corpus, qa = _corpus(tmp)
    cfg = load(None, {
        "out": str(tmp / "out"), "corpus": {"builder": None}, "inputs": [str(corpus)],
        "target": "source = 'pydoc'", "qa": {"path": str(qa), "held_out_fraction": 0.3},
        "model": {"size": "tiny", "vocab_size": 512, "seq_len": 64},
        "train": {"base_tokens": 64 * 8 * 12, "cpt_tokens": 64 * 8 * 6, "batch_rows": 8, "log_every": 1,
                  "checkpoint_every": 3, "device": "cpu"},
        "seeds": 2, "arms": ["a", "b"], "eval_fraction": 0.2, "eval_max_docs": 6, "workers": 2})
    lines: list[str] = []
    first = run_miniature(cfg, echo=lines.append)
    rerun_lines: list[str] = []
    second = run_miniature(cfg, echo=rerun_lines.append)
    return cfg, first, second, lines, rerun_lines


def test_held_out_answers_are_decontaminated(miniature):
    from curate.pipeline.catalog.db import query

    cfg, r, _, _, _ = miniature
    qa = r["qa"]
    assert qa["train"] + qa["held_out"] == qa["pairs"] and qa["held_out"] > 0
    held = [json.loads(line) for line in Path(qa["held_out_path"]).read_text().splitlines()]
    urls = {json.loads(line)["url"] for p in cfg.inputs for line in Path(p).read_text().splitlines()}
    in_corpus = [it for it in held if f"pydoc:{it['id']}" in urls]
    # each held-out answer opens its pydoc topic, so that topic's document was dropped
    assert in_corpus and r["decontamination"]["dropped_docs"] >= len(in_corpus)
    run = Path(cfg.out) / "run"
    for item in in_corpus:
        n = query(run, "SELECT count(*) AS n FROM docs WHERE url = 'pydoc:' || ?".replace("?", repr(item["id"])))
        assert n["n"][0].as_py() == 0, item["id"]
    reasons = {d["reason"] for d in r["decontamination"]["dropped"]}
    assert reasons == {"contaminated:qa_held_out"}


def test_one_base_for_every_arm(miniature):
    cfg, r, _, _, _ = miniature
    out = Path(cfg.out)
    assert (out / "base" / "model" / "config.json").is_file()
    digests = {json.loads((out / "arms" / f"{a}-s{s}" / "arm.json").read_text())["base_digest"]
               for a in cfg.arms for s in range(cfg.seeds)}
    assert len(digests) == 1
    tokens = {json.loads(p.read_text())["tokens"] for p in (out / "arms" / "_done").glob("*.json")}
    assert len(tokens) == 1  # equal continued-pretraining tokens in every arm


def test_table_rows_and_paired_differences(miniature):
    cfg, r, _, _, _ = miniature
    s = r["summary"]
    assert list(s) == ["a", "b"]
    for arm in s:
        for m in ("target/bpb", "general/bpb", "qa/answer_bpb", "qa/acc"):
            assert len(s[arm][m]["values"]) == cfg.seeds
            assert s[arm][m]["mean"] == pytest.approx(statistics.fmean(s[arm][m]["values"]))
    assert "vs_a" not in s["a"]["target/bpb"]
    for m, v in s["b"].items():
        d = [x - y for x, y in zip(v["values"], s["a"][m]["values"])]
        assert v["vs_a"]["diff"] == pytest.approx(statistics.fmean(d))
        # The report's p is the paired t-test's, as scipy computes it (None only where the paired
        # differences do not vary, so the test statistic is undefined).
        import scipy.stats as scipy_stats
        if len(set(d)) > 1:
            assert v["vs_a"]["p"] == pytest.approx(float(scipy_stats.ttest_rel(v["values"], s["a"][m]["values"]).pvalue), rel=1e-6)
        else:
            assert v["vs_a"]["p"] is None
    out = Path(cfg.out)
    for name in ("report.md", "bars.png", "curves.png", "summary.json"):
        assert (out / name).stat().st_size > 0
    assert "b: reuse recipe" in (out / "report.md").read_text()


def test_report_gives_each_arms_tokens_per_role(miniature):
    cfg, r, _, _, _ = miniature
    assert set(r["role_tokens"]) == {"a", "b"}
    a, b = r["role_tokens"]["a"], r["role_tokens"]["b"]
    assert a["source"] == b["source"] == "trainer (mixture.json)"
    assert a["total"] == b["total"] == sum(b["roles"].values())
    assert a["roles"].get("qa", 0) == 0 and a["qa_blend_share"] == 0
    plan = json.loads((Path(cfg.out) / "plans" / "b.json").read_text())
    qb = plan["phases"][-1]
    # the QA pairs trained on are the plan's (qa_share of the QA blend, or what the cap allows),
    # to within the one row per group and phase the trainer may differ by
    assert b["roles"]["qa"] > 0 and abs(b["roles"]["qa"] - qb["tokens"]["qa"]) <= cfg.model.seq_len
    n = qb["end_token"] - qb["start_token"]
    assert qb["tokens"]["qa"] == round(cfg.train.qa_share * n) or any("capped at" in w for w in plan["warnings"])
    report = (Path(cfg.out) / "report.md").read_text()
    assert "## Tokens per role" in report and f"| {b['roles']['qa']:,} |" in report


def _plans_of_every_arm(cfg):
    """Every arm's plan on a catalog whose target domain is ~30x its QA pairs (no training)."""
    from bench.miniature import arms as A
    from curate.mixtures.groups import group_stats
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import recipe_from_dict

    chars = {"qa": 60_000, "tgt": 2_000_000, "tgt-sel": 2_000_000, "tgt-rnd": 2_000_000, "gen": 8_000_000,
             "gen-sel": 8_000_000, "gen-rnd": 8_000_000}
    groups = [{"name": n, "where": f"source = '{n}'"} for n in chars]
    step = cfg.model.seq_len * cfg.train.batch_rows
    out = {}
    for k, r in A.recipes(cfg, groups).items():
        rec = recipe_from_dict(r, k)
        rows = [{"grp": g.name, "documents": 100, "chars": chars[g.name]} for g in rec.groups]
        out[k] = build_plan(rec, group_stats(rec.groups, rows), int(cfg.train.cpt_tokens) // step * step,
                            cfg.model.seq_len, batch_size=cfg.train.batch_rows)
    return out


def test_arms_get_the_qa_share_and_rewarming_switches_at_bs_token():
    from bench.miniature import arms as A
    from bench.miniature.config import load

    cfg = load(ROOT / "configs" / "miniature.yaml")
    plans = _plans_of_every_arm(cfg)
    roles = {k: A.role_tokens(p) for k, p in plans.items() if k != "base"}
    # (b) and (e) switch at the same token, so they train equally long on the QA blend
    assert plans["e"]["phases"][0]["end_token"] == plans["b"]["phases"][0]["end_token"]
    assert roles["e"]["qa_blend_share"] == roles["b"]["qa_blend_share"] > 0.25
    for k in ("b", "c", "d", "e"):
        n = roles[k]["qa_blend_share"] * roles[k]["total"]
        assert roles[k]["roles"]["qa"] / n == pytest.approx(cfg.train.qa_share, abs=1 / n), k
        assert plans[k]["phases"][0]["tokens"]["qa"] == 0, k
    # (h): the target upweighted as in (b)'s general blend, and no QA at all
    assert roles["h"]["roles"].get("qa", 0) == 0 and plans["h"]["phases"][-1]["tokens"]["qa"] == 0
    assert plans["h"]["phases"][0]["weights"]["tgt"] == pytest.approx(plans["b"]["phases"][0]["weights"]["tgt"])
    # (e): re-warmed over 1% of its tokens from eta0 to base_lr, cosine to a tenth of it
    s = plans["e"]["schedule"]
    step = plans["e"]["tokens_per_step"]
    assert s["warmup_init_lr"] == pytest.approx(A.eta0(cfg)) and s["lr_start"] == cfg.train.base_lr
    assert s["lr_end"] == pytest.approx(cfg.train.base_lr / 10)
    assert abs(s["warmup_tokens"] - 0.01 * plans["e"]["total_tokens"]) <= step


def test_rerun_skips_finished_work(miniature):
    cfg, first, second, _, rerun = miniature
    text = "\n".join(rerun)
    for step in ("qa", "curate", "groups", "pack", "base"):
        assert f"[{step}] done before, skipped" in text
    assert f"{len(cfg.arms) * cfg.seeds} arm(s) already finished" in text
    assert "training " not in text
    assert second["summary"] == first["summary"]


def test_paired_t_by_hand_matches_scipy():
    from bench.miniature.report import t_sf

    import scipy.stats as scipy_stats
    for t, df in ((0.3, 1), (2.0, 2), (4.3, 2), (-1.5, 3), (8.0, 5)):
        assert t_sf(t, df) == pytest.approx(float(scipy_stats.t.sf(t, df)), rel=1e-9, abs=1e-12)


def test_shipped_config_loads_and_names_bad_fields():
    from bench.miniature.config import load
    from curate.records.errors import ConfigError

    cfg = load(ROOT / "configs" / "miniature.yaml")
    assert cfg.seeds == 3 and cfg.arms[0] == "a"
    gpu = load(ROOT / "configs" / "miniature.yaml", gpu=True)
    assert gpu.model.size != cfg.model.size and gpu.train.cpt_tokens > cfg.train.cpt_tokens
    with pytest.raises(ConfigError, match="train.cpt_tokenz"):
        load(None, {"train": {"cpt_tokenz": 1}})
    with pytest.raises(ConfigError, match="arms"):
        load(None, {"arms": ["b"]})


def test_bad_config_is_one_error_line(tmp_path, capsys):
    from bench.recipe_miniature import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("seedz: 3\n")
    for argv, says in ((["--config", str(bad)], "seedz"), (["--config", str(tmp_path / "none.yaml")], "none.yaml")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("recipe_miniature: error:") and says in err[0]
