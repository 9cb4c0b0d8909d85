"""The reuse recipe's QA blend (Parmar et al. 2024) on a catalog whose target role is 100x its
QA role: the QA share is the configured one, QA epochs stay under their cap, the general blend
holds no QA, and the plan says all of it."""

from __future__ import annotations

import pytest

from curate.mixtures.groups import group_stats
from curate.mixtures.planner import build_plan, format_table
from curate.mixtures.recipes import RecipeError, recipe_from_dict
from curate.mixtures.schema import validate_plan
from curate.records.plan import Plan

# chars; at the default 0.25 tokens/char: qa 250K tokens, target 25M, general 25M
CHARS = {"qa": 1_000_000, "target": 100_000_000, "general": 100_000_000}
STEP = 256 * 8


def recipe(**extra):
    data = {"name": "r", "kind": "reuse", "switch": {"lr_ratio": 0.2},
            "schedule": {"kind": "cosine", "lr_start": 1e-3, "lr_end_ratio": 0.01},
            "role_weights": {"target": 2.0},
            "groups": [{"name": g, "where": f"source = '{g}'"} for g in CHARS],
            "roles": {"qa": ["qa"], "target": ["target"], "general": ["general"]}, "max_epochs": 8.0, **extra}
    return recipe_from_dict(data)


def plan_for(rec, total=10_000_000):
    av = group_stats(rec.groups, [{"grp": g, "documents": c // 1000, "chars": c} for g, c in CHARS.items()])
    plan = build_plan(rec, av, total, 256, batch_size=8).to_dict()
    validate_plan(plan)
    return plan


def qa_blend(plan):
    p = plan["phases"][-1]
    return p, p["end_token"] - p["start_token"]


@pytest.mark.parametrize("share", [0.05, 0.12, 0.3])
def test_qa_share_is_the_configured_one_whatever_the_target_size(share):
    plan = plan_for(recipe(qa_share=share))
    avail = {g["name"]: g["available_tokens"] for g in plan["groups"]}
    assert avail["target"] == 100 * avail["qa"]
    gb = plan["phases"][0]
    p, n = qa_blend(plan)
    assert p["weights"]["qa"] == pytest.approx(share, abs=1 / n)  # one token of rounding
    assert gb["tokens"]["qa"] == 0 and gb["weights"]["qa"] == 0  # QA is new at the switch
    qa = next(g for g in plan["groups"] if g["name"] == "qa")
    assert qa["epochs"] <= qa["max_epochs"] == 8.0
    # the non-QA rest of the QA blend is the general blend, target upweighted 2x
    rest = {g: p["tokens"][g] for g in ("target", "general")}
    assert rest["target"] / rest["general"] == pytest.approx(2.0, rel=1e-4)
    assert gb["weights"]["target"] == pytest.approx(2 / 3)


def test_plan_lists_role_shares_and_the_summary_names_qa_tokens_and_epochs():
    plan = plan_for(recipe())
    p, n = qa_blend(plan)
    roles = p["roles"]
    assert set(roles) == {"qa", "target", "general"}
    assert sum(r["tokens"] for r in roles.values()) == n
    assert roles["qa"]["tokens"] == p["tokens"]["qa"] and roles["qa"]["share"] == pytest.approx(0.12, abs=1 / n)
    assert plan["phases"][0]["roles"]["qa"]["tokens"] == 0
    qa_tokens = roles["qa"]["tokens"]
    epochs = qa_tokens / next(g["available_tokens"] for g in plan["groups"] if g["name"] == "qa")
    assert f"QA: {qa_tokens:,} tokens" in plan["summary"] and f"{epochs:.2f} epochs" in plan["summary"]
    assert "qa 12.0" in plan["summary"]
    table = format_table(Plan.from_dict(plan))
    assert f"summary: {plan['summary']}" in table
    assert f"qa {roles['qa']['share']:.2%} ({qa_tokens:,} tokens)" in table


def test_qa_epoch_cap_lowers_the_share_and_says_so():
    # the paper's 1.5-epoch variant: 12% of the QA blend would be ~1.4 passes over 250K tokens
    # at 10M tokens; at 40M it would be ~5.6, so the cap binds
    plan = plan_for(recipe(qa_max_epochs=1.5), total=40_000_000)
    p, n = qa_blend(plan)
    qa = next(g for g in plan["groups"] if g["name"] == "qa")
    assert qa["max_epochs"] == 1.5 and qa["epochs"] <= 1.5
    assert qa["requested_tokens"] == int(1.5 * qa["available_tokens"])
    assert p["weights"]["qa"] < 0.12
    assert sum(p["tokens"].values()) == n
    moved = [m for m in plan["redistributed"] if m["group"] == "qa"]
    assert moved and moved[0]["requested_tokens"] == round(0.12 * n) and moved[0]["granted_tokens"] == p["tokens"]["qa"]
    assert any("capped at 1.5 epochs" in w for w in plan["warnings"])
    # other groups keep the plan's cap
    assert next(g for g in plan["groups"] if g["name"] == "target")["max_epochs"] == 8.0
    # 3.5 epochs lets the full share through at 10M tokens
    assert plan_for(recipe(qa_max_epochs=3.5))["redistributed"] == []


def test_qa_blend_role_weights_set_the_target_in_the_qa_blend_only():
    plan = plan_for(recipe(qa_blend_role_weights={"target": 1.0}))
    p, n = qa_blend(plan)
    assert p["tokens"]["target"] / p["tokens"]["general"] == pytest.approx(1.0, rel=1e-4)
    assert p["weights"]["qa"] == pytest.approx(0.12, abs=1 / n)
    assert plan["phases"][0]["weights"]["target"] == pytest.approx(2 / 3)


def test_old_qa_fraction_is_read_as_qa_share_with_a_note():
    plan = plan_for(recipe(qa_fraction=0.1))
    p, n = qa_blend(plan)
    assert p["weights"]["qa"] == pytest.approx(0.1, abs=1 / n)
    assert any(w.startswith("recipe field qa_fraction (0.1) is read as qa_share") for w in plan["warnings"])
    with pytest.raises(RecipeError, match=r"qa_fraction: the old name of qa_share; give only qa_share"):
        recipe(qa_fraction=0.1, qa_share=0.2)
    with pytest.raises(RecipeError, match=r"qa_share: must be in \(0, 1\)"):
        recipe(qa_share=1.5)
    with pytest.raises(RecipeError, match=r"qa_max_epochs: must be > 0"):
        recipe(qa_max_epochs=0)


def test_qa_group_without_documents_is_refused_by_name():
    rec = recipe()
    av = group_stats(rec.groups, [{"grp": g, "documents": 10, "chars": c} for g, c in CHARS.items() if g != "qa"])
    with pytest.raises(RecipeError, match=r"qa groups \['qa'\] have no documents"):
        build_plan(rec, av, 10_000_000, 256, batch_size=8)
