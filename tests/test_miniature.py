"""bench/recipe_miniature.py at a tiny scale on text that comes with Python: pydoc topics are the
target domain, QA pairs are made from them (the answer: a topic's opening words; the other
choices: the same words reordered), standard-library source is the general pool. Arms (a), (b),
(f) `curate search` and (g) PreSelect, two bases x two seeds, a few steps each; the properties
checked hold for any corpus: held-out answers decontaminated, no training document sharing a
13-gram with a held-out one, one base per base seed, a row per arm, paired differences, every
stated comparison computed, the report's files, and a rerun that trains nothing."""

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
        "train": {"base_tokens": 64 * 8 * 12, "cpt_tokens": 64 * 8 * 10, "batch_rows": 8, "log_every": 1,
                  "checkpoint_every": 3, "device": "cpu"},
        # rungs near the base's width: a ladder this undertrained otherwise ranks every document alike
        "preselect": {"sample": 200, "min_positives": 5, "rungs": [48, 56], "max_chars": 1500, "tokens_ratio": 1.0,
                      "length_bins": 2},
        "seeds": 2, "bases": 2, "arms": ["a", "b", "f", "g"], "eval_fraction": 0.2, "eval_max_docs": 6,
        "workers": 2})
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


def test_no_training_document_shares_an_ngram_with_a_held_out_one(miniature):
    from bench.miniature.leaks import shared_ngrams
    from curate.pipeline.catalog.db import query

    cfg, r, _, _, _ = miniature
    run = Path(cfg.out) / "run"
    specs = [spec.split("=", 1)[1] for spec in r["groups"]["eval_where"]]
    held = [t for spec in specs for t in query(run, f"SELECT text FROM docs WHERE {spec}")["text"].to_pylist()]
    # what the arms train on: the groups' documents less the held-out ones (pack keeps those apart)
    not_held = " AND ".join(f"NOT ({s})" for s in specs)
    train = [t for g in r["groups"]["groups"]
             for t in query(run, f"SELECT text FROM docs WHERE ({g['where']}) AND {not_held}")["text"].to_pylist()]
    assert held and train and shared_ngrams(train, held, cfg.decontaminate_n) == []
    # each held-out answer opens a pydoc topic, and the QA pairs quote them: some pairs were left out
    assert r["leaks"]["by_source"].get("qa", 0) > 0 and len(r["leaks"]["ids"]) == sum(r["leaks"]["by_source"].values())
    assert f"{len(r['leaks']['ids'])} training documents shared" in (Path(cfg.out) / "report.md").read_text()


def test_every_arm_from_every_base(miniature):
    cfg, r, _, _, _ = miniature
    out = Path(cfg.out)
    digests = {}
    for b in range(cfg.bases):
        assert (out / "bases" / f"b{b}" / "model" / "config.json").is_file()
        digests[b] = {json.loads((out / "arms" / f"{a}-b{b}-s{s}" / "arm.json").read_text())["base_digest"]
                      for a in cfg.arms for s in range(cfg.seeds)}
        assert len(digests[b]) == 1
    assert len(set().union(*digests.values())) == cfg.bases  # the bases differ (seed b)
    tokens = {json.loads(p.read_text())["tokens"] for p in (out / "arms" / "_done").glob("*.json")}
    assert len(tokens) == 1  # equal continued-pretraining tokens in every arm
    s = r["summary"]["b"]["target/bpb"]
    assert s["base_var"] is not None and s["order_var"] is not None


def test_search_and_preselect_arms(miniature):
    cfg, r, _, _, _ = miniature
    f, g = r["search"], r["preselect"]
    assert f["proxies"] >= 8 and f["proxy_tokens"] <= cfg.train.cpt_tokens / 5
    assert -1 <= f["fit"]["target_dev/bpb"]["spearman"] <= 1
    assert abs(sum(f["weights"].values()) - 1) < 1e-6
    # the ladder: two rungs of other widths and base 0 on top
    assert len(g["ladder"]) == 3 and g["ladder"][-1] == r["bases"][0]["model"]
    assert len({json.loads((Path(m) / "config.json").read_text())["hidden_size"] for m in g["ladder"]}) == 3
    assert (Path(cfg.out) / "run" / "models" / "quality_pre.bin").is_file()
    # (g) trains on the PreSelect pick in its target role, the same character budget as (c)'s
    assert "pre" in r["groups"]["picks"] and any("-pre" in gr["name"] for gr in r["groups"]["groups"])
    report = (Path(cfg.out) / "report.md").read_text()
    assert "held-out Spearman" in report and "Ladder" in report


def test_table_rows_and_paired_differences(miniature):
    cfg, r, _, _, _ = miniature
    s = r["summary"]
    assert list(s) == ["a", "b", "f", "g"]
    for arm in s:
        for m in ("target/bpb", "general/bpb", "qa/answer_bpb", "qa/acc", "qa/acc_norm"):
            assert len(s[arm][m]["values"]) == cfg.seeds * cfg.bases
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
    # every comparison stated is computed: each arm vs (a), and (f) vs (b)
    stated = {(c["arm"], c["vs"]) for c in r["comparisons"]}
    assert stated == {("b", "a"), ("f", "a"), ("g", "a"), ("f", "b")}
    for c in r["comparisons"]:
        d = [x - y for x, y in zip(s[c["arm"]][c["metric"]]["values"], s[c["vs"]][c["metric"]]["values"])]
        assert c["diff"] == pytest.approx(statistics.fmean(d))
    assert "| f vs b | target/bpb |" in (out / "report.md").read_text()


def test_report_gives_each_arms_tokens_per_role(miniature):
    cfg, r, _, _, _ = miniature
    assert set(r["role_tokens"]) == {"a", "b", "f", "g"}
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


def test_rerun_skips_finished_work(miniature):
    cfg, first, second, _, rerun = miniature
    text = "\n".join(rerun)
    for step in ("qa", "curate", "groups", "pack", "base0", "base1", "preselect", "search"):
        assert f"[{step}] done before, skipped" in text
    assert f"{len(cfg.arms) * cfg.seeds} arm(s) already finished" in text
    assert "training " not in text
    assert second["summary"] == first["summary"]


@pytest.fixture(scope="module")
def two_scales(miniature):
    """The fixture's run with `scales: 2`: scale 1 is all done before; scale 2 a model of another
    shape from its own bases, its declared arms (those of a, b, c, f, g the run has) and, as the
    shipped config, 1 seed from each base."""
    from bench.miniature.config import load, merge
    from bench.recipe_miniature import run_scales

    cfg = miniature[0]
    two = load(None, merge(json.loads(json.dumps(cfg.__dict__, default=lambda o: o.__dict__)), {
        "scales": 2, "second_scale": {"model": {"hidden_size": 48, "layers": 3}, "token_factor": 1.5,
                                      "arms": ["a", "b", "c", "f", "g"], "seeds": 1}}))
    lines: list[str] = []
    return two, run_scales(two, "ray", echo=lines.append), lines


def test_second_scale_reuses_scale_ones_data_side_and_reports_both(two_scales):
    cfg, (small, large), lines = two_scales
    out, big = Path(cfg.out), Path(cfg.out) / "scale2"
    text = "\n".join(lines)
    assert "training " not in text.split("scale 1's run, picks and mixture (reused)")[0]  # scale 1: all cached
    # scale 2: its declared arms that the run has, from its own bases of the second shape
    assert list(large["summary"]) == ["a", "b", "f", "g"] and small["scale2"]["arms"] == ["a", "b", "f", "g"]
    assert all(len(m["values"]) == cfg.bases for s in large["summary"].values() for m in s.values())
    assert large["summary"]["b"]["target/bpb"]["order_var"] is None  # one seed: the bases' variance only
    assert all(c["n"] == cfg.bases for c in large["comparisons"])  # paired over the 2 bases
    for b in range(cfg.bases):
        shape = json.loads((big / "bases" / f"b{b}" / "model" / "config.json").read_text())
        assert (shape["hidden_size"], shape["num_hidden_layers"]) == (48, 3)
    assert large["bases"][0]["tokens"] > small["bases"][0]["tokens"]
    # the data side is scale 1's: the same run, PreSelect pick and searched mixture; no search or ladder again
    assert (big / "run").resolve() == (out / "run").resolve()
    assert large["search"] == small["search"] and large["preselect"] == small["preselect"]
    assert not (big / "ladder").exists() and not (big / "_done" / "search.json").exists()
    assert not {"mixture search (f)", "PreSelect ladder, classifier and pack"} & {m["step"] for m in large["timing"]}
    # decision accuracy over the pairs of arms both scales ran (4 arms: 6 pairs)
    acc = small["decision_accuracy"]["target/bpb"]
    assert acc["pairs"] == 6 and 0 <= acc["accuracy"] <= 1
    report = (out / "report.md").read_text()
    assert "arms (a), (b), (f), (g) from its own 2 bases x 1 data-order seed (2 (base, seed) pairs" in report
    assert "Both scales:" in report
    assert f"| total | {small['scale2']['wall_s']:.0f} |" in report


def test_lm_eval_gives_the_same_accuracy_on_an_arms_model(miniature, tmp_path):
    """The miniature's 4-choice items as its lm-eval task file, scored by lm-eval and by curate's
    evaluation on one arm's model: the same acc and acc_norm. Short items, so every prompt and
    choice fits the 64-token context (lm-eval cuts what does not; curate scores it in windows)."""
    from pydoc_data import topics

    from bench.miniature import data as D
    from bench.recipe_miniature import lm_eval_task
    from curate.pipeline.commands.evaluation import eval_model
    from curate.training.lm_eval_tasks import run_lm_eval

    cfg, _, _, _, _ = miniature
    model = Path(cfg.out) / "arms" / "a-b0-s0" / "model"
    items = [(n, {"question": f"Topic {n}?", "answer": " ".join(topics.topics[n].split()[:3])})
             for n in sorted(topics.topics)[:16]]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"id": k, **it}) + "\n" for k, it in D.with_choices(items, 4, "t")))
    theirs = run_lm_eval(model, [lm_eval_task(str(qa), tmp_path / "task")])["miniature_qa"]
    ours = eval_model(model, run=Path(cfg.out) / "run", qa=[str(qa)], out=tmp_path / "ev", device="cpu",
                      block=cfg.model.seq_len, stride=cfg.model.seq_len // 2, echo=lambda s: None)["qa"]["qa"]
    assert theirs["sample_len"] == ours["mc_items"] == 16
    assert theirs["acc"] == pytest.approx(ours["acc"]) and theirs["acc_norm"] == pytest.approx(ours["acc_norm"])
