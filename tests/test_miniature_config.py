"""bench/recipe_miniature.py's parts that need no training: the shipped config and its errors,
every arm's plan (the QA share, the re-warmed arm's switch), the second scale's config, the paired
t-test and the decision table, and the QA split with its leak check on the Debian FAQ. The run
itself, at a tiny scale, is tests/test_miniature.py."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _plans_of_every_arm(cfg):
    """Every arm's plan on a catalog whose target domain is ~30x its QA pairs (no training)."""
    from bench.miniature import arms as A
    from curate.mixtures.groups import group_stats
    from curate.mixtures.planner import build_plan
    from curate.mixtures.recipes import recipe_from_dict

    chars = {"qa": 60_000, "tgt": 2_000_000, "tgt-sel": 2_000_000, "tgt-pre": 2_000_000, "tgt-rnd": 2_000_000,
             "gen": 8_000_000, "gen-sel": 8_000_000, "gen-pre": 8_000_000, "gen-rnd": 8_000_000}
    groups = [{"name": n, "where": f"source = '{n}'"} for n in chars]
    step = cfg.model.seq_len * cfg.train.batch_rows
    out = {}
    for k, r in A.recipes(cfg, groups).items():
        rec = recipe_from_dict(r, k)
        rows = [{"grp": g.name, "documents": 100, "chars": chars[g.name]} for g in rec.groups]
        out[k] = build_plan(rec, group_stats(rec.groups, rows), int(cfg.train.cpt_tokens) // step * step,
                            cfg.model.seq_len, batch_size=cfg.train.batch_rows).to_dict()
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
    for k in ("b", "c", "d", "e", "g"):
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


def test_second_scale_config_under_gpu_and_bad_arms():
    from bench.miniature.config import load
    from bench.recipe_miniature import scale2_config
    from curate.records.errors import ConfigError

    for gpu in (False, True):
        cfg = load(ROOT / "configs" / "miniature.yaml", gpu=gpu)
        big = scale2_config(cfg)
        f = cfg.second_scale.token_factor
        assert big.train.cpt_tokens == cfg.train.cpt_tokens * f and big.train.base_tokens == cfg.train.base_tokens * f
        assert set("abcfg") <= set(big.arms) <= set(cfg.arms) and big.bases == cfg.bases >= 2
        assert big.model.shape() != cfg.model.shape() and big.model.vocab_size == cfg.model.vocab_size
        assert big.train.max_epochs == cfg.train.max_epochs * f  # scale 1's mixtures fit the larger budget
    assert big.model.size == "350m"  # the gpu block's second scale
    with pytest.raises(ConfigError, match=r"second_scale.arms`: must hold \['c'\]"):
        load(None, {"second_scale": {"arms": ["a", "b", "f", "g"]}})
    load(None, {"arms": ["a", "b", "f", "g"], "second_scale": {"arms": ["a", "b", "f", "g"]}})


def test_paired_t_by_hand_matches_scipy():
    from bench.miniature.report import t_sf

    import scipy.stats as scipy_stats
    for t, df in ((0.3, 1), (2.0, 2), (4.3, 2), (-1.5, 3), (8.0, 5)):
        assert t_sf(t, df) == pytest.approx(float(scipy_stats.t.sf(t, df)), rel=1e-9, abs=1e-12)


def test_shipped_config_loads_and_names_bad_fields():
    from bench.miniature.config import load
    from curate.records.errors import ConfigError

    cfg = load(ROOT / "configs" / "miniature.yaml")
    assert cfg.seeds == 3 and cfg.bases == 2 and cfg.arms[0] == "a" and set("abcdefgh") <= set(cfg.arms)
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


def test_debian_faq_leak_is_left_out_of_training(tmp_path):
    """The audit's case on the default corpus: FAQ sections 8.1.4 and 15.1 were held-out target
    documents while their own question/answer pairs were in the QA training group. The check
    flags exactly the training pairs whose FAQ section is held out (and nothing when none is)."""
    from bench.miniature import data as D
    from bench.miniature.config import load
    from bench.miniature.leaks import shared_ngrams
    from curate.pipeline.commands.corpus import _read
    from curate.pipeline.commands.corpus_faq import _faq_docs, find_faq, parse_faq

    faq = find_faq()
    if faq is None:
        pytest.skip("the Debian FAQ is not installed (apt-get install debian-faq): the default corpus cannot be built")
    items = parse_faq(_read(faq) or "")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({k: it[k] for k in ("id", "question", "answer")}) + "\n" for it in items))
    cfg = load(ROOT / "configs" / "miniature.yaml", {"qa": {"path": str(qa)}})
    split = D.split_qa(cfg, tmp_path)
    train = [json.loads(line) for line in Path(split["train_path"]).read_text().splitlines()]
    trained = {t["id"].removeprefix("qa:debian-faq-") for t in train}
    assert {"8.1.4", "15.1"} <= trained  # the audit's pairs are training pairs under the shipped split
    docs = {d["url"].rsplit("#", 1)[1]: d["text"] for d in _faq_docs(items, faq)}
    held = [docs["8.1.4"], docs["15.1"]]
    hits = shared_ngrams([t["text"] for t in train], held, 13)
    flagged = {train[i]["id"].removeprefix("qa:debian-faq-") for i in hits}
    assert {"8.1.4", "15.1"} <= flagged
    # the held-out pairs got 4 choices: the answer and 3 other held-out answers, the same on every run
    held_items = [json.loads(line) for line in Path(split["held_out_path"]).read_text().splitlines()]
    assert all(len(it["choices"]) == 4 and it["answer"] in it["choices"] for it in held_items)
    answers = {it["answer"] for it in held_items}
    assert all(set(it["choices"]) <= answers for it in held_items)
    assert D.split_qa(cfg, tmp_path / "again")["held_out"] == split["held_out"]
    assert (tmp_path / "again" / "qa" / "held_out.jsonl").read_text() == Path(split["held_out_path"]).read_text()


def test_decision_accuracy_and_decision_table():
    from bench.miniature.report import decision_accuracy, decision_rows

    def summ(means):
        return {a: {"target/bpb": {"mean": m}} for a, m in means.items()}

    small = summ({"a": 2.0, "b": 1.9, "c": 1.95, "f": 1.8})
    large = summ({"a": 1.5, "b": 1.4, "c": 1.3, "f": 1.2})  # b vs c flips; the other 5 pairs agree
    acc = decision_accuracy(small, large)["target/bpb"]
    assert acc == {"accuracy": 5 / 6, "pairs": 6}
    comp = [{"arm": "c", "vs": "b", "metric": "target/bpb", "diff": 0.05, "rel": 0.05 / 1.9, "p": 0.01,
             "better": False}]
    rows = decision_rows(comp, [dict(comp[0], better=True)])
    assert rows[1][:3] == ["c vs b", "target/bpb", "b"] and rows[1][5:] == ["yes", "no"]
