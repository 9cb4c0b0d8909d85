"""Recipe and group definitions: what loads, and errors that name the field."""

from __future__ import annotations

import copy

import duckdb
import pytest
import yaml

from curate.mixtures.groups import Group, GroupError, group_case_sql, parse_groups
from curate.mixtures.recipes import RecipeError, load_recipe, recipe_from_dict


def test_group_case_is_first_match_in_duckdb():
    groups = parse_groups([{"name": "hq", "where": "q >= 4"}, {"name": "code", "where": "d = 'code'"},
                           {"name": "rest", "where": "d <> 'spam'"}])
    con = duckdb.connect()
    con.execute("CREATE TABLE docs AS SELECT * FROM (VALUES (5, 'code'), (1, 'code'), (4, 'web'), (2, 'web'),"
                " (2, 'spam'), (NULL, 'web'), (NULL, NULL)) t(q, d)")
    got = [r[0] for r in con.execute(f"SELECT {group_case_sql(groups)} FROM docs").fetchall()]
    assert got == ["hq", "code", "hq", "rest", None, "rest", None]


def test_group_definitions_are_checked():
    with pytest.raises(GroupError, match="name"):
        Group("Bad Name", "TRUE")
    with pytest.raises(GroupError, match="';'"):
        Group("x", "TRUE; DROP TABLE docs")
    with pytest.raises(GroupError, match="unbalanced"):
        Group("x", "(a = 1")
    with pytest.raises(GroupError, match="twice"):
        parse_groups([{"name": "a", "where": "TRUE"}, {"name": "a", "where": "TRUE"}])


def test_recipe_errors_name_the_field():
    base = yaml.safe_load((load_recipe.__globals__["RECIPES_DIR"] / "custom.yaml").read_text())
    bad = copy.deepcopy(base)
    bad["phases"][0]["weights"]["code"] = 0.9
    with pytest.raises(RecipeError, match=r"phases\[0\]\.weights.*sum to"):
        recipe_from_dict(bad)
    with pytest.raises(RecipeError, match="kind"):
        recipe_from_dict(dict(base, kind="magic"))
    with pytest.raises(RecipeError, match="unknown field"):
        recipe_from_dict(dict(base, colour="blue"))
    with pytest.raises(RecipeError, match="roles.*unknown group"):
        recipe_from_dict(dict(yaml.safe_load((load_recipe.__globals__["RECIPES_DIR"] / "reuse.yaml").read_text()),
                              roles={"qa": ["nope"]}))
    with pytest.raises(RecipeError, match="not found"):
        load_recipe("no-such-recipe")


def test_comment_markers_inside_quotes_are_allowed_outside_refused():
    groups = parse_groups([{"name": "dashes", "where": "url LIKE '%--%'"},
                           {"name": "slash", "where": "url LIKE '%/*%' OR \"odd--col\" = 'x'"},
                           {"name": "quoted", "where": "url = 'it''s -- fine; (really'"}])
    con = duckdb.connect()
    con.execute("CREATE TABLE docs AS SELECT * FROM (VALUES ('a--b', 'y'), ('c/*d', 'y'), ('e', 'x'),"
                " ('it''s -- fine; (really', 'y'), ('plain', 'y')) t(url, \"odd--col\")")
    got = [r[0] for r in con.execute(f"SELECT {group_case_sql(groups)} FROM docs").fetchall()]
    assert got == ["dashes", "slash", "slash", "dashes", None]
    for where in ("TRUE -- note", "a = 1 /* note */", "\"x\" = 1 --", "'a' = 'a' /*"):
        with pytest.raises(GroupError, match="comments"):
            Group("x", where)
    with pytest.raises(GroupError, match="';'"):
        Group("x", "'a' = 'a'; SELECT 1")
    with pytest.raises(GroupError, match="unbalanced"):
        Group("x", "\"x = 1")


def shipped(name):
    return yaml.safe_load((load_recipe.__globals__["RECIPES_DIR"] / f"{name}.yaml").read_text())


@pytest.mark.parametrize("name, change, match", [
    # role_weights / end_role_weights name roles of `roles`: a typo is an error, not a no-op.
    ("reuse", {"role_weights": {"general": 1.0, "high_qualty": 2.0}}, r"^reuse\.role_weights: role 'high_qualty'"),
    ("upsample-end", {"end_role_weights": {"target": 4.0, "qa": 2.0}}, r"^upsample-end\.end_role_weights: role 'qa'"),
    # Booleans are booleans: "false" is a non-empty string, which Python would read as true.
    ("custom", {"allow_redistribute": "false"}, r"^custom\.allow_redistribute: expected true or false"),
    ("natural", {"allow_redistribute": 0}, r"^natural\.allow_redistribute: expected true or false"),
    # A list or mapping where a number belongs names the field.
    ("temperature", {"tau": [1.0, 2.0]}, r"^temperature\.tau: expected a number"),
    ("natural", {"max_epochs": {"a": 1}}, r"^natural\.max_epochs: expected a number"),
    ("reuse", {"switch": {"lr_ratio": [0.2]}}, r"^reuse\.switch\.lr_ratio: expected a number"),
    ("natural", {"schedule": {"lr_start": [3e-4]}}, r"^natural\.schedule\.lr_start: expected a number"),
    ("custom", {"phases": {"name": "x"}}, r"^custom\.phases: expected a list"),
    ("reuse", {"roles": ["qa"]}, r"^reuse\.roles: expected a mapping"),
    ("natural", {"name": ["x"]}, r"^natural\.name: expected a string"),
    # Fields the kind does not read are refused by name.
    ("natural", {"switch": {"fraction": 0.5}}, r"^natural\.switch: not used by a natural recipe"),
    ("natural", {"tau": 2.0}, r"^natural\.tau: not used by a natural recipe"),
    ("natural", {"phases": []}, r"^natural\.phases: not used by a natural recipe"),
    ("temperature", {"unimax_epochs": 2.0}, r"^temperature\.unimax_epochs: not used"),
    ("custom", {"qa_fraction": 0.2}, r"^custom\.qa_fraction: not used by a custom recipe"),
    ("upsample-end", {"tau": 2.0}, r"^upsample-end\.tau: only used with end_base: temperature"),
])
def test_recipe_fields_are_checked_by_name(name, change, match):
    with pytest.raises(RecipeError, match=match):
        recipe_from_dict(dict(shipped(name), **change), name)


def test_recipe_fields_that_are_right_still_load():
    assert recipe_from_dict(dict(shipped("upsample-end"), end_base="temperature", tau=2.0)).rule.tau == 2.0
    assert recipe_from_dict(dict(shipped("natural"), allow_redistribute=True, max_epochs="3e0")).max_epochs == 3.0
    assert recipe_from_dict(dict(shipped("unimax"), unimax_epochs=None)).rule.unimax_epochs is None


@pytest.mark.parametrize("schedule, match", [
    ({"lr_start": -1e-4}, r"^natural\.schedule\.lr_start: must be > 0"),
    ({"lr_start": 1e-4, "lr_end": 2e-4}, r"^natural\.schedule\.lr_end: must be in \[0, lr_start"),
    ({"decay_fraction": 0.0}, r"^natural\.schedule\.decay_fraction: must be in \(0, 1\]"),
    ({"warmup_init_lr": 1.0}, r"^natural\.schedule\.warmup_init_lr: must be in \[0, lr_start\]"),
    ({"kind": "exp"}, r"^natural\.schedule\.kind: got 'exp'"),
    ({"wsd_decay": "step"}, r"^natural\.schedule\.wsd_decay: got 'step'"),
    ({"lr_end_ratio": 2.0}, r"^natural\.schedule\.lr_end_ratio: must be in \[0, 1\]"),
])
def test_bad_schedule_fails_when_the_recipe_loads(schedule, match):
    with pytest.raises(RecipeError, match=match):
        recipe_from_dict(dict(shipped("natural"), schedule=schedule), "natural")


def test_boundary_rules_are_one_check_for_recipes_and_schedules():
    from curate.mixtures.recipes import Boundary
    from curate.mixtures.schedule import Schedule, boundary_token

    s = Schedule("cosine", 3e-4, 3e-5, 1_000_000)
    for kw, match in [({"lr_ratio": 1.5}, r"^lr_ratio: must be in \(0, 1\]"), ({"lr": -1e-4}, r"^lr: must be > 0"),
                      ({"fraction": 1.0}, r"^fraction: must be in \(0, 1\)"), ({}, "exactly one")]:
        with pytest.raises(ValueError, match=match):
            Boundary(**kw)
        with pytest.raises(ValueError, match=match):
            boundary_token(s, **kw)
    with pytest.raises(RecipeError, match=r"^reuse\.switch\.lr_ratio: must be in \(0, 1\]"):
        recipe_from_dict(dict(shipped("reuse"), switch={"lr_ratio": 2.0}), "reuse")
