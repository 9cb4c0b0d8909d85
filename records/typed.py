"""Build typed dataclasses from plain dicts (parsed YAML), with errors that name the field: the
one builder of the run config (pipeline/running/config.py), the train config (training/config.py),
mixture recipes (mixtures/recipes.py) and the plan record (records/plan.py).

Supported annotations: int, float, str, bool, None-able (`X | None`), Literal[...], list[X],
dict[str, X], and nested dataclasses. A float field takes a numeric string too (YAML reads `3e-4`
as one). A dataclass's `__post_init__` may raise ValueError; a message that starts with a field
(`threshold: ...`, `phases[0].weights: ...`) is re-raised as ConfigError naming that field's path.

Two hooks, for configs whose valid fields depend on their other values:
- `field(metadata={"parse": fn})`: the field's value is `fn(value, path)` (e.g. a list checked as a
  whole); fn raises ConfigError naming the field.
- a classmethod `refused_field(data) -> (field, message) | None` on the dataclass: a field the rest
  of `data` makes meaningless (a recipe field its `kind` does not read) is refused before building.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any, Literal, get_args, get_origin, get_type_hints

from curate.records.errors import ConfigError


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, path: str) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        given = [a for a in args if a is not type(None)]
        if len(given) == 1:  # `X | None`: X's own error names the nested field
            return coerce(value, given[0], path)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, path)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(path, f"got {value!r}; expected {' or '.join(_type_name(a) for a in args)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(path, f"got {value!r}; valid values: {', '.join(map(repr, get_args(tp)))}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp) or (Any,)
        return [coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {value!r}")
        _, vt = get_args(tp) or (str, Any)
        return {str(k): coerce(v, vt, f"{path}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        return build(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected a number, got {value!r}")
        if not isinstance(value, (int, float)):
            # YAML reads `1e9` as a string; accept numeric strings.
            try:
                return float(value)
            except (TypeError, ValueError):
                raise ConfigError(path, f"expected a number, got {value!r}") from None
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            hint = ("; YAML reads unquoted off/on/yes/no as booleans and null/~ as None: quote it"
                    if value is None or isinstance(value, bool) else "")
            raise ConfigError(path, f"expected a string, got {type(value).__name__} {value!r}{hint}")
        return value
    return value


def build(cls: type, data: Any, path: str) -> Any:
    """`cls(**data)` with every field checked against its annotation."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping of {cls.__name__} fields, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise ConfigError(where, f"unknown field {unknown[0]!r}; valid fields of {cls.__name__}: "
                                 f"{', '.join(sorted(fields))}")
    refused = getattr(cls, "refused_field", None)
    if refused is not None and (why := refused(data)) is not None:
        raise ConfigError(f"{path}.{why[0]}" if path else why[0], why[1])
    kwargs = {}
    for name, value in data.items():
        where = f"{path}.{name}" if path else name
        parse = fields[name].metadata.get("parse")
        kwargs[name] = parse(value, where) if parse else coerce(value, hints[name], where)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}" if path else missing[0], "required field is missing")
    try:
        return cls(**kwargs)
    except ConfigError:  # a nested build inside `__post_init__` already named its field
        raise
    except ValueError as e:
        msg = str(e)
        # A __post_init__ message that starts with a field name ("threshold: ..." or "threshold
        # must be ...") points at that field, or inside it ("phases[0].weights: ...").
        m = re.match(r"`?([A-Za-z_]\w*)((?:\[\d+\]|\.\w+)*)`?(:?)\s", msg)
        if m and m.group(1) in fields and (m.group(3) or not m.group(2)):
            name = m.group(1) + m.group(2)
            where = f"{path}.{name}" if path else name
            raise ConfigError(where, msg[m.end():].strip() if m.group(3) else msg) from None
        raise ConfigError(path or cls.__name__, msg) from None


def load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)`, refusing a mapping that gives one key twice: YAML keeps the last
    silently, so a config would run with a value its author did not mean (ConfigError naming the
    key and both lines of `where`)."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict = {}
            for key_node, _ in node.value:
                key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
                try:
                    if key in seen and key != "<<":
                        raise ConfigError(str(key), f"{where}: line {line} gives `{key}` again (first on line "
                                                    f"{seen[key]}); give each key once")
                    seen[key] = line
                except TypeError:  # an unhashable key: SafeLoader refuses it itself
                    continue
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)
