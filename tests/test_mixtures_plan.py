"""The planner on plain tables: recipes, exact integer allocation, epoch caps, schema
(recipe and group validation: test_mixtures_recipes.py)."""

from __future__ import annotations

import copy
import math
import random

import pytest
import yaml

from curate.mixtures.allocate import InfeasiblePlan, largest_remainder
from curate.mixtures.groups import GroupError, group_stats
from curate.mixtures.planner import build_plan, megatron_blend
from curate.mixtures.recipes import load_recipe, recipe_from_dict, shipped_recipes
from curate.mixtures.schedule import lr_at
from curate.mixtures.schema import PlanValidationError, validate_plan

CHARS = {"docs": 4_000_000, "code": 40_000_000, "changelog": 20_000_000, "legal": 8_000_000, "web": 60_000_000}


def rows(chars=CHARS, unassigned=0):
    out = [{"grp": g, "documents": c // 1000, "chars": c} for g, c in chars.items()]
    if unassigned:
        out.append({"grp": None, "documents": 3, "chars": unassigned})
    return out


def plan_for(recipe, total=30_000_000, seq_len=2048, batch=8, chars=CHARS, **kw):
    rec = load_recipe(recipe) if isinstance(recipe, str) else recipe
    return build_plan(rec, group_stats(rec.groups, rows(chars)), total, seq_len, batch_size=batch, **kw).to_dict()


def custom(weights_by_phase, **extra):
    names = sorted({g for w in weights_by_phase for g in w} | set(CHARS))
    phases = []
    for i, w in enumerate(weights_by_phase):
        p = {"name": f"p{i}", "weights": w}
        if i < len(weights_by_phase) - 1:
            p["until"] = {"fraction": (i + 1) / len(weights_by_phase)}
        phases.append(p)
    data = {"name": "t", "kind": "custom", "phases": phases,
            "groups": [{"name": g, "where": f"source = '{g}'"} for g in names], **extra}
    return recipe_from_dict(data)


def test_largest_remainder_is_exact_and_close():
    rng = random.Random(0)
    for _ in range(200):
        w = {f"g{i}": rng.random() for i in range(rng.randint(1, 9))}
        total = rng.randint(0, 10**9)
        out = largest_remainder(total, w)
        assert sum(out.values()) == total
        s = sum(w.values())
        assert all(abs(out[g] - total * w[g] / s) < 1 for g in w)


@pytest.mark.parametrize("name", shipped_recipes())
def test_every_shipped_recipe_validates_and_adds_up(name):
    assert set(shipped_recipes()) >= {"natural", "temperature", "unimax", "reuse", "upsample-end", "custom"}
    plan = plan_for(name, total=30_000_123)
    validate_plan(plan)
    assert sum(sum(p["tokens"].values()) for p in plan["phases"]) == 30_000_123
    assert plan["phases"][0]["start_token"] == 0 and plan["phases"][-1]["end_token"] == 30_000_123
    for p in plan["phases"]:
        assert sum(p["tokens"].values()) == p["end_token"] - p["start_token"]
        assert sum(p["weights"].values()) == pytest.approx(1.0, abs=1e-12)
        # LR at every boundary is the schedule's LR there.
        assert p["lr_start"] == lr_at(plan["schedule"], p["start_token"])
        assert p["lr_end"] == lr_at(plan["schedule"], p["end_token"])
        if p is not plan["phases"][-1]:
            assert p["end_token"] % plan["tokens_per_step"] == 0
    for g in plan["groups"]:
        assert g["requested_tokens"] == sum(p["tokens"][g["name"]] for p in plan["phases"])
        assert g["epochs"] <= g["max_epochs"]


def test_reuse_switch_is_the_closed_form_step():
    plan = plan_for("reuse", total=50_000_000, batch=4)
    s = plan["schedule"]
    assert s["kind"] == "cosine" and s["warmup_tokens"] == 0 and s["lr_end"] == pytest.approx(s["lr_start"] / 100)
    step = plan["tokens_per_step"]
    p = math.acos(2 * (0.2 - 0.01) / (1 - 0.01) - 1) / math.pi  # cosine inverse at lr = lr_start / 5
    switch = plan["phases"][0]["end_token"]
    assert switch // step == math.ceil(p * 50_000_000 / step)
    assert plan["phases"][1]["lr_start"] <= s["lr_start"] / 5 < lr_at(s, switch - step)
    gb, qb = plan["phases"][0]["weights"], plan["phases"][1]["weights"]
    # docs (role qa) is held out of the general blend and gets qa_share (0.12) of phase 2,
    # whatever the target's size; the rest of phase 2 is the general blend.
    n = plan["phases"][1]["end_token"] - plan["phases"][1]["start_token"]
    assert gb["docs"] == 0 and qb["docs"] == pytest.approx(0.12, abs=1 / n)
    assert all(qb[g] == pytest.approx((1 - qb["docs"]) * gb[g], abs=1 / n) for g in gb if g != "docs")
    # Target and high-quality (non-web) groups get 2x their natural share, web 0.5x (Parmar et al.'s GB).
    assert gb["code"] / gb["web"] == pytest.approx(4 * CHARS["code"] / CHARS["web"])
    assert gb["legal"] / gb["web"] == pytest.approx(4 * CHARS["legal"] / CHARS["web"])


def test_reuse_lr_start_override_scales_the_schedule():
    plan = plan_for("reuse", lr_start=1e-4)
    assert plan["schedule"]["lr_start"] == 1e-4 and plan["schedule"]["lr_end"] == pytest.approx(1e-6)


def test_temperature_and_unimax_rules():
    w = plan_for("temperature")["phases"][0]["requested_weights"]
    tau = load_recipe("temperature").rule.tau
    assert w["code"] / w["docs"] == pytest.approx((CHARS["code"] / CHARS["docs"]) ** (1 / tau))
    un = plan_for("unimax", total=20_000_000)
    t = {g["name"]: g["requested_tokens"] for g in un["groups"]}
    # 4M each; docs (1M tokens) is capped at 2 epochs = 2M, leaving 4.5M each for the other four;
    # legal (2M tokens) is capped at 4M; the last 14M go equally to the three large groups.
    assert t["docs"] == 2_000_000 and t["legal"] == 4_000_000
    assert all(abs(t[g] - 14_000_000 / 3) < 1 for g in ("changelog", "code", "web"))
    with pytest.raises(InfeasiblePlan, match="unimax"):
        plan_for("unimax", total=70_000_000)


def test_upsample_end_multiplies_target_share_in_the_last_phase():
    plan = plan_for("upsample-end")
    a, b = plan["phases"][0]["weights"], plan["phases"][1]["weights"]
    assert plan["phases"][1]["start_token"] == round(0.8 * 30_000_000 / plan["tokens_per_step"]) * plan["tokens_per_step"]
    assert (b["code"] / b["web"]) == pytest.approx(4 * a["code"] / a["web"])
    assert (b["docs"] / b["web"]) == pytest.approx(4 * a["docs"] / a["web"])
    assert b["legal"] / b["web"] == pytest.approx(a["legal"] / a["web"])


def test_infeasible_plan_names_group_asked_and_available():
    rec = custom([{"docs": 0.5, "web": 0.5}])
    qa_tokens = CHARS["docs"] // 4
    with pytest.raises(InfeasiblePlan) as e:
        plan_for(rec, total=10_000_000, batch=1)
    msg = str(e.value)
    assert "'docs'" in msg and f"{5_000_000} tokens" in msg and f"{qa_tokens} tokens available" in msg


def test_redistribution_respects_caps_and_is_reported():
    rec = custom([{"docs": 0.5, "web": 0.5}, {"docs": 0.5, "code": 0.5}], allow_redistribute=True)
    plan = plan_for(rec, total=10_000_000, batch=1)
    validate_plan(plan)
    g = {x["name"]: x for x in plan["groups"]}
    assert g["docs"]["requested_tokens"] == 4 * (CHARS["docs"] // 4)
    assert all(x["epochs"] <= 4 for x in plan["groups"])
    assert sum(x["requested_tokens"] for x in plan["groups"]) == 10_000_000
    assert plan["redistributed"] and plan["redistributed"][0]["group"] == "docs"
    assert any("capped" in w for w in plan["warnings"])
    # Phase 1 gets docs' full half; phase 2 what is left of its 4M cap, the rest to code.
    p1, p2 = plan["phases"]
    assert p1["tokens"]["docs"] == (p1["end_token"] - p1["start_token"]) // 2
    assert p2["tokens"]["docs"] == 4_000_000 - p1["tokens"]["docs"]
    assert p2["tokens"]["code"] == p2["end_token"] - p2["start_token"] - p2["tokens"]["docs"]
    assert p2["weights"]["docs"] == p2["tokens"]["docs"] / (p2["end_token"] - p2["start_token"])


def test_group_without_documents_is_refused_by_name():
    chars = dict(CHARS, legal=0)
    with pytest.raises(InfeasiblePlan, match="'legal'.*0 tokens available"):
        plan_for(custom([{"legal": 0.1, "web": 0.9}]), chars=chars)


def test_budget_beyond_all_caps_is_refused():
    with pytest.raises(InfeasiblePlan, match="max_epochs=4"):
        plan_for("natural", total=200_000_000)
    with pytest.raises(InfeasiblePlan, match="cap"):
        plan_for(custom([{"docs": 0.5, "web": 0.5}], allow_redistribute=True), total=200_000_000)


def test_estimated_counts_say_so_and_unassigned_is_reported():
    rec = load_recipe("natural")
    av = group_stats(rec.groups, rows(unassigned=400))
    plan = build_plan(rec, av, 1_000_000, 1024)
    assert plan.token_counts == "estimated" and plan.tokens_per_char_source == "default"
    assert (plan.unassigned.documents, plan.unassigned.tokens) == (3, 100)
    assert any("default ratio" in w for w in plan.warnings)
    exact = group_stats(rec.groups, [dict(r, tokens=r["chars"] // 3) for r in rows()])
    assert exact.token_counts == "exact" and exact.by_name()["code"].available_tokens == CHARS["code"] // 3


def test_megatron_blend_round_trips():
    plan = plan_for("reuse")
    for p in plan["phases"]:
        parts = p["megatron_blend"].split()
        pairs = dict(zip(parts[1::2], map(float, parts[0::2])))
        expect = {f"tokens/{g}/tokens": w for g, w in p["weights"].items() if w > 0}
        assert pairs.keys() == expect.keys()
        assert all(pairs[k] == pytest.approx(v, rel=1e-7) for k, v in expect.items())
    assert megatron_blend({"a": 0.25, "b": 0.0, "c": 0.75}) == "0.25 tokens/a/tokens 0.75 tokens/c/tokens"


def test_schema_rejects_broken_plans():
    plan = plan_for("custom")
    validate_plan(plan)
    for mutate, match in [
        (lambda p: p.pop("phases"), "phases"),
        (lambda p: p["phases"][0]["tokens"].update(code=p["phases"][0]["tokens"]["code"] + 1), "add up"),
        (lambda p: p["phases"][1].update(start_token=p["phases"][1]["start_token"] + 1), "expected to start"),
        (lambda p: p["schedule"].update(kind="exp"), "schedule/kind"),
        (lambda p: p.update(schema_version=2), "schema_version"),
    ]:
        broken = copy.deepcopy(plan)
        mutate(broken)
        with pytest.raises(PlanValidationError, match=match):
            validate_plan(broken)


@pytest.mark.parametrize("max_epochs", [1.5, 3.3])
def test_unimax_plan_respects_its_own_floored_caps(max_epochs):
    # With unimax_epochs null the cap is max_epochs; n x max_epochs is not a whole number for
    # these groups, so a float cap rounded to the nearest token could land one over the
    # floored cap the allocator checks, and the plan would be refused.
    base = yaml.safe_load((load_recipe.__globals__["RECIPES_DIR"] / "unimax.yaml").read_text())
    rec = recipe_from_dict(dict(base, max_epochs=max_epochs, unimax_epochs=None))
    for d in range(12):
        chars = dict(CHARS, docs=4_000_000 + 4 * d + 1, legal=8_000_000 + 4 * d + 3)
        total = 20_000_000 + d
        plan = plan_for(rec, total=total, batch=1, chars=chars)
        validate_plan(plan)
        g = {x["name"]: x for x in plan["groups"]}
        assert g["docs"]["requested_tokens"] == math.floor(g["docs"]["available_tokens"] * max_epochs)
        assert sum(x["requested_tokens"] for x in plan["groups"]) == total
        uncapped = [x["requested_tokens"] for x in plan["groups"]
                    if x["requested_tokens"] < math.floor(x["available_tokens"] * max_epochs)]
        assert max(uncapped) - min(uncapped) <= 1


def test_tokens_per_char_source_has_its_own_wording():
    rec = load_recipe("natural")

    def note(**kw):
        plan = build_plan(rec, group_stats(rec.groups, rows(), **kw), 1_000_000, 1024)
        (w,) = [w for w in plan.warnings if "estimated from characters" in w]
        return plan.tokens_per_char_source, w

    src, w = note(tokens_per_char=0.3)
    assert src == "given" and "given ratio of 0.3000" in w and "default" not in w
    src, w = note(tokens_per_char=0.3, tokens_per_char_source="given")
    assert src == "given" and "given ratio" in w
    src, w = note()
    assert src == "default" and "default ratio of 0.2500" in w and "given" not in w
    src, w = note(tokens_per_char=0.28, tokens_per_char_source="measured: tok.model on 9 sampled docs")
    assert src.startswith("measured") and "measured ratio of 0.2800" in w and "tok.model on 9 sampled docs" in w
    with pytest.raises(GroupError, match="tokens_per_char_source.*valid: measured, given, default"):
        group_stats(rec.groups, rows(), tokens_per_char=0.3, tokens_per_char_source="guessed")
    exact = group_stats(rec.groups, [dict(r, tokens=r["chars"] // 3) for r in rows()], tokens_per_char=0.3)
    assert exact.tokens_per_char_source == "n/a" and exact.tokens_per_char is None
    plan = build_plan(rec, group_stats(rec.groups, rows(), tokens_per_char=0.3), 1_000_000, 1024).to_dict()
    validate_plan(plan)
    with pytest.raises(PlanValidationError, match="tokens_per_char_source"):
        validate_plan(dict(plan, tokens_per_char_source="default (given)"))


def test_redistribution_reports_only_groups_at_their_cap():
    from curate.mixtures.allocate import allocate_phases

    # g1 asks for 60 of 85 tokens but holds 57 (1 epoch): it is capped and its excess goes to
    # the others. g2's share is 0.37 tokens, rounded up to 1 before and down to 0 after the
    # excess moves; that is rounding, not a cap, and must not be reported as one.
    avail = {"g0": 41, "g1": 57, "g2": 48}
    weights = {"g0": 0.2925593729895337, "g1": 0.7253573663832179, "g2": 0.0042952886027857184}
    (alloc,), moves = allocate_phases([("p", 85, weights)], avail, 1.0, True)
    assert alloc == {"g0": 28, "g1": 57, "g2": 0}
    assert [(m.group, m.requested_tokens, m.granted_tokens) for m in moves] == [("g1", 60, 57)]
    # A phase that fits under every cap keeps its rounding and reports nothing.
    (alloc,), moves = allocate_phases([("p", 85, weights)], avail, 2.0, True)
    assert alloc == largest_remainder(85, weights) and moves == []


def test_schema_checks_group_totals_and_step_aligned_phases():
    plan = plan_for("custom")
    validate_plan(plan)

    def shift_boundary(p, by):
        a, b = p["phases"][0], p["phases"][1]
        g = max(a["tokens"], key=a["tokens"].get)  # move tokens of one group across, sums stay right
        a["end_token"] -= by
        b["start_token"] -= by
        a["tokens"][g] -= by
        b["tokens"][g] += by

    for mutate, match in [
        (lambda p: p["groups"][0].update(requested_tokens=p["groups"][0]["requested_tokens"] + 1),
         "requested_tokens=.* phase tokens add up to"),
        (lambda p: shift_boundary(p, 1), "not on a whole step of 16384 tokens"),
        (lambda p: shift_boundary(p, 2048), "not on a whole step of 16384 tokens"),
        (lambda p: p.update(tokens_per_step=4096), "tokens_per_step=4096 is not seq_len x batch_size"),
    ]:
        broken = copy.deepcopy(plan)
        mutate(broken)
        with pytest.raises(PlanValidationError, match=match):
            validate_plan(broken)
    # A whole step's shift keeps the plan valid; without tokens_per_step a row is the step.
    ok = copy.deepcopy(plan)
    shift_boundary(ok, 16384)
    validate_plan(ok)
    rows_only = {k: v for k, v in copy.deepcopy(plan).items() if k not in ("tokens_per_step", "batch_size")}
    shift_boundary(rows_only, 2048)
    validate_plan(rows_only)
    shift_boundary(rows_only, 1)
    with pytest.raises(PlanValidationError, match="whole step of 2048 tokens"):
        validate_plan(rows_only)
