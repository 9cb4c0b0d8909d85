"""Recipe kinds as registered classes: a new kind is one class (by import path or a table line),
and every shipped recipe planned on a real catalog gives the plan.json its published rule says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pydoc_data.topics as topics
import pytest

from curate.mixtures.groups import group_stats
from curate.mixtures.kinds import RECIPE_KINDS
from curate.mixtures.planner import build_plan
from curate.mixtures.recipes import RecipeError, RecipeKind, load_recipe, recipe_from_dict, shipped_recipes
from curate.mixtures.schema import validate_plan
from curate.mixtures.weights import PhaseWeights
from curate.pipeline.commands.plan import availability, plan
from curate.records.plan import Plan
from curate.stages.shardio import write_parquet


@dataclass
class Flat(RecipeKind):
    """Every group with documents gets the same weight, but none below `floor` of the natural one."""

    floor: float = 0.0
    """Least weight as a fraction of the group's natural share."""

    def __post_init__(self) -> None:
        if not 0 <= self.floor <= 1:
            raise ValueError(f"floor: must be in [0, 1], got {self.floor}")

    def phase_weights(self, recipe, schedule, available, align, max_epochs):
        total, used = sum(available.values()), [g for g, n in available.items() if n > 0]
        raw = {g: max(1.0 / len(used), self.floor * n / total) if n > 0 else 0.0 for g, n in available.items()}
        s = sum(raw.values())
        return [PhaseWeights("main", 0, schedule.total_tokens, {g: w / s for g, w in raw.items()}, None)]


class NotAKind:
    pass


@dataclass
class Clashing(Flat):
    max_epochs: float = 1.0
    """A field every recipe has already."""


ROWS = [{"grp": "a", "documents": 10, "chars": 400_000}, {"grp": "b", "documents": 10, "chars": 1_200_000},
        {"grp": "c", "documents": 10, "chars": 2_400_000}]


def flat_recipe(kind: str, **extra) -> dict:
    return {"name": "flat", "kind": kind, "groups": [{"name": g, "where": f"source = '{g}'"} for g in "abc"],
            "max_epochs": 4.0, **extra}


def test_a_recipe_kind_of_ones_own_is_one_class_named_by_import_path():
    rec = recipe_from_dict(flat_recipe(f"{__name__}:Flat"), "flat")
    assert isinstance(rec.rule, Flat)
    record = build_plan(rec, group_stats(rec.groups, ROWS, tokens_per_char=0.25), 400_000, 128, batch_size=4)
    assert isinstance(record, Plan) and record.recipe_kind == f"{__name__}:Flat"
    plan_json = record.to_dict()
    validate_plan(plan_json)  # the schema takes a user's kind as its import path
    (phase,) = plan_json["phases"]
    assert phase["weights"] == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    assert sum(phase["tokens"].values()) == 400_000
    # Its own field is typed and checked, named as a recipe field; another kind's field is refused.
    assert recipe_from_dict(flat_recipe(f"{__name__}:Flat", floor=1.0), "flat").rule.floor == 1.0
    with pytest.raises(RecipeError, match=r"^flat\.floor: must be in \[0, 1\]"):
        recipe_from_dict(flat_recipe(f"{__name__}:Flat", floor=2.0), "flat")
    with pytest.raises(RecipeError, match=r"^flat\.floor: expected a number"):
        recipe_from_dict(flat_recipe(f"{__name__}:Flat", floor="most"), "flat")
    with pytest.raises(RecipeError, match=r"^flat\.tau: not used by a .*:Flat recipe.*: floor\)"):
        recipe_from_dict(flat_recipe(f"{__name__}:Flat", tau=2.0), "flat")
    with pytest.raises(RecipeError, match=r"^flat\.kind: .*NotAKind' is not a recipe kind"):
        recipe_from_dict(flat_recipe(f"{__name__}:NotAKind"), "flat")
    with pytest.raises(RecipeError, match=r"^flat\.kind: .*Clashing': field 'max_epochs' is one every recipe has"):
        recipe_from_dict(flat_recipe(f"{__name__}:Clashing"), "flat")
    with pytest.raises(RecipeError, match=r"^flat\.kind: 'no_such_module_x:Flat': cannot import module"):
        recipe_from_dict(flat_recipe("no_such_module_x:Flat"), "flat")


def test_a_table_line_makes_a_kind_a_name(monkeypatch):
    monkeypatch.setitem(RECIPE_KINDS, "flat", Flat)
    rec = recipe_from_dict(flat_recipe("flat", floor=1.0), "flat")
    plan_json = build_plan(rec, group_stats(rec.groups, ROWS, tokens_per_char=0.25), 400_000, 128, batch_size=4).to_dict()
    # floor 1.0: c's natural share (0.6) beats the uniform third, the others keep a third
    want = {"a": 1 / 3 / (2 / 3 + 0.6), "b": 1 / 3 / (2 / 3 + 0.6), "c": 0.6 / (2 / 3 + 0.6)}
    assert plan_json["phases"][0]["weights"] == pytest.approx(want)
    assert "flat" in str(pytest.raises(RecipeError, recipe_from_dict, flat_recipe("flatt"), "x").value)


DOMAINS = {"tech-docs": 12, "code": 40, "changelog": 24, "legal": 10, "web": 90}


def catalog(tmp_path: Path) -> Path:
    """A run directory (stages.json and Parquet shards) whose documents are pydoc topics, spread
    over the demo's domains, with exact token counts."""
    texts = [v for _, v in sorted(topics.topics.items()) if len(v) > 300]
    ids, text, domain = [], [], []
    for d, n in DOMAINS.items():
        for i in range(n):
            ids.append(f"{d}-{i}")
            text.append(texts[(len(ids) * 7) % len(texts)] + f"\n{i}")
            domain.append(d)
    run = tmp_path / "run"
    for part in range(2):
        idx = range(part, len(ids), 2)
        write_parquet(run / "tag" / f"part-{part:05d}-000.parquet", pa.table({
            "id": [ids[i] for i in idx], "text": [text[i] for i in idx], "source": ["pydoc" for _ in idx],
            "url": [None for _ in idx], "date": pa.nulls(len(idx), pa.timestamp("us", tz="UTC")),
            "n_chars": [len(text[i]) for i in idx], "domain": [domain[i] for i in idx],
            "n_tokens": [len(text[i]) // 4 for i in idx]}))
    (run / "stages.json").write_text(json.dumps(["tag"]))
    return run


def rule_weights(rec, avail: dict[str, int], plan_json: dict) -> list[dict[str, float]]:
    """Each phase's requested weights as the kind's published rule gives them, computed here from
    the available tokens alone (the oracle the plan is compared with)."""
    def norm(w):
        s = sum(w.values())
        return {g: v / s for g, v in w.items()}

    def scaled(base, mult, drop=()):
        return norm({g: 0.0 if rec.role_of(g) in drop else w * mult.get(rec.role_of(g), 1.0) for g, w in base.items()})

    nat, r = norm({g: float(n) for g, n in avail.items()}), rec.rule
    if rec.kind == "natural":
        return [nat]
    if rec.kind == "temperature":  # p ∝ n^(1/tau)
        return [norm({g: n ** (1 / r.tau) for g, n in avail.items()})]
    if rec.kind == "unimax":  # Chung et al. 2023: equal budget, each group capped at N epochs
        budget, left, share = plan_json["total_tokens"], dict(avail), {}
        while left:
            each = (budget - sum(share.values())) / len(left)
            small = {g for g, n in left.items() if n * r.unimax_epochs < each}
            if not small:
                share.update({g: each for g in left})
                break
            share.update({g: int(left.pop(g) * r.unimax_epochs) for g in small})
        return [norm(share)]
    if rec.kind == "upsample-end":
        return [nat, scaled(nat, r.end_role_weights)]
    if rec.kind == "reuse":  # Parmar et al. 2024: QA held out of the GB, qa_share of the QA blend
        qa = [g for g in avail if rec.role_of(g) == "qa"]
        rest = scaled(nat, r.role_weights, ("qa",))
        qa_part = {g: r.qa_share * avail[g] / sum(avail[h] for h in qa) for g in qa}
        return [rest, {g: qa_part.get(g, (1 - r.qa_share) * rest[g]) for g in avail}]
    assert rec.kind == "custom"
    return [norm({g: float(p.weights.get(g, 0.0)) for g in avail}) for p in r.phases]


@pytest.mark.parametrize("name", shipped_recipes())
def test_each_shipped_recipe_plans_a_catalog_as_its_rule_says(tmp_path, name):
    """`curate plan` writes what the typed Plan holds (plan.json read back through the record is
    the same bytes, and the dict adapter gives the same JSON), and each phase's weights are the
    kind's rule computed independently from the catalog's token counts."""
    run = catalog(tmp_path)
    written = plan(run, name, None, 64, batch_size=2, lr_start=1e-3, plot=False, echo=None)
    raw = (run / "plan.json").read_text()
    assert json.dumps(Plan.from_dict(json.loads(raw)).to_dict(), indent=2) + "\n" == raw
    assert written == json.loads(raw)
    rec = load_recipe(name)
    same = build_plan(rec, availability(run, rec.groups), written["total_tokens"], 64, batch_size=2, lr_start=1e-3).to_dict()
    assert same == written
    avail = {g["name"]: g["available_tokens"] for g in written["groups"]}
    assert len(avail) == 5 and all(v > 0 for v in avail.values())
    want = rule_weights(rec, avail, written)
    assert [p["name"] for p in written["phases"]] and len(want) == len(written["phases"])
    for p, w in zip(written["phases"], want):
        n = p["end_token"] - p["start_token"]
        # unimax and reuse's QA blend give whole tokens per group themselves: a few tokens' slack
        assert p["requested_weights"] == pytest.approx(w, abs=5 / n if rec.kind in ("unimax", "reuse") else 1e-12)
        assert sum(p["tokens"].values()) == n and p["roles"] and sum(v["tokens"] for v in p["roles"].values()) == n
    assert written["summary"].startswith(f"phase {written['phases'][-1]['name']!r}: ")
