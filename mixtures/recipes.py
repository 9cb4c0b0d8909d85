"""Mixture recipes: YAML files that say how group weights change over training.

A recipe names its groups (first-match SQL slices, see groups.py), gives groups roles
(`general`, `high_quality`, `qa`, `target`, or any other name), sets the LR schedule, and
picks a `kind`: a class in `mixtures/kinds.py`'s RECIPE_KINDS table (its own fields beside the
common ones of `recipe_types.Recipe`, and its weight rule), or a user's own class given as `kind: "module:Class"`.
Shipped recipes are in `configs/recipes/<name>.yaml`; `load_recipe` accepts such a name or a
path to a YAML file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

from curate.mixtures.kinds import RECIPE_KINDS
from curate.mixtures.recipe_types import (COMMON_FIELDS, Boundary, PhaseSpec, Recipe, RecipeError,  # noqa: F401
                                          RecipeKind, ScheduleSpec, check_role_weights)
from curate.records.errors import ConfigError
from curate.records.typed import build

RECIPES_DIR = Path(__file__).resolve().parents[1] / "configs" / "recipes"


def kind_class(kind: Any) -> type:
    """The RecipeKind class of a recipe's `kind`: a RECIPE_KINDS name or "module:Class";
    ValueError saying what is valid otherwise."""
    if isinstance(kind, str) and kind in RECIPE_KINDS:
        return RECIPE_KINDS[kind]
    if not isinstance(kind, str) or ":" not in kind:
        raise ValueError(f"got {kind!r}; valid: {', '.join(RECIPE_KINDS)}, or your own RecipeKind class "
                         "as \"module:Class\"")
    from curate.stages.filter.user import import_object

    cls = import_object(kind, "a recipe kind")
    if not (isinstance(cls, type) and issubclass(cls, RecipeKind) and dataclasses.is_dataclass(cls)):
        raise ValueError(f"{kind!r} is not a recipe kind: give a @dataclass subclass of "
                         "curate.mixtures.recipes.RecipeKind")
    clash = [f.name for f in dataclasses.fields(cls) if f.name in COMMON_FIELDS]
    if clash:
        raise ValueError(f"{kind!r}: field {clash[0]!r} is one every recipe has ({', '.join(COMMON_FIELDS)}); "
                         "rename it in the class")
    return cls


def _kind_fields(data: Mapping[str, Any], kind: str, cls: type) -> dict[str, Any]:
    """The keys of `data` that are `cls`'s own fields. A key that is a field of another kind only
    is refused with the fields this kind reads, so a setting in the wrong recipe (tau on a natural
    one, a switch on a custom one) cannot pass silently; ConfigError names the key."""
    own = [f.name for f in dataclasses.fields(cls)]
    other = {f.name for c in RECIPE_KINDS.values() for f in dataclasses.fields(c)}
    unknown = sorted(k for k in data if k not in COMMON_FIELDS and k not in own and k not in other)
    if unknown:
        valid = ", ".join(sorted(COMMON_FIELDS + tuple(own)))
        raise ConfigError(unknown[0], f"unknown field {unknown[0]!r}; valid fields of a {kind} recipe: {valid}")
    for k in data:
        if k not in COMMON_FIELDS and k not in own:
            raise ConfigError(k, f"not used by a {kind} recipe; remove it or change `kind` (fields of a {kind} "
                                 f"recipe beyond the common ones: {', '.join(own) or 'none'})")
    return {k: v for k, v in data.items() if k in own}


def _build_recipe(data: Any, source: str) -> Recipe:
    if not isinstance(data, Mapping):
        raise ConfigError(source, f"expected a mapping of recipe fields, got {data!r}")
    if "kind" not in data:
        raise ConfigError(f"{source}.kind", "required field is missing")
    try:
        cls = kind_class(data["kind"])
        own = _kind_fields(data, data["kind"], cls)
    except ConfigError as e:
        raise ConfigError(f"{source}.{e.field}", e.message) from None
    except ValueError as e:
        raise ConfigError(f"{source}.kind", str(e)) from None
    rule = build(cls, own, source)
    recipe = build(Recipe, {**{k: v for k, v in data.items() if k in COMMON_FIELDS}, "rule": rule}, source)
    try:
        rule.check(recipe)
    except ValueError as e:
        where, sep, why = str(e).partition(": ")
        raise ConfigError(f"{source}.{where}" if sep else source, why if sep else str(e)) from None
    return recipe


def recipe_from_dict(data: Mapping[str, Any], source: str = "recipe") -> Recipe:
    """The recipe of a parsed YAML mapping (`records.typed.build` for the common fields and for
    the kind's own); RecipeError names the field as `<source>.<field path>`."""
    try:
        return _build_recipe(dict(data) if isinstance(data, Mapping) else data, source)
    except ConfigError as e:
        raise RecipeError(f"{e.field}: {e.message}") from None


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name (configs/recipes/<name>.yaml) or a recipe YAML file by path."""
    import yaml

    p = Path(name_or_path)
    if p.suffix not in (".yaml", ".yml"):
        p = RECIPES_DIR / f"{name_or_path}.yaml"
        if not p.exists():
            shipped = ", ".join(shipped_recipes()) or "none"
            raise RecipeError(f"recipe {name_or_path!r} not found; shipped recipes: {shipped}; or give a path to a .yaml file")
    if not p.exists():
        raise RecipeError(f"recipe file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe file {p} is not valid YAML: {e}") from None
    return recipe_from_dict(data, p.stem)


def shipped_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
