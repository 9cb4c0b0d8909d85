"""The run config: typed, validated, with errors that name the field (`pipeline.errors.ConfigError`).

```yaml
name: demo                      # run name
out: runs/demo                  # run directory (relative to the working directory)
inputs:                         # list of InputSpec (stages/inputs/ingest.py)
  - {path: data/system.jsonl, format: auto, source: null, fields: {text: text}}
ingest: {max_chars: 1000000, shard_docs: 20000, split_mb: 32}
ray: {address: null, workers: null}
stages:                         # after ingest, in order; `kind` picks the stage
  - {kind: exact_dedup, name: exact_dedup, ...stage fields...}
```
"""

from __future__ import annotations

import importlib
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from curate.pipeline.errors import ConfigError
from curate.pipeline.running.stage_table import STAGE_KINDS
from curate.records.typed import build, load_yaml
from curate.stages.inputs.ingest import IngestConfig, InputSpec
from curate.stages.filter.user import NoFields, user_stage_class


# Names a stage can't take: catalog views and run-directory folders.
RESERVED_NAMES = ("ingest", "docs", "rejected", "quarantine", "shards", "tokens", "train", "models", "plots")


@dataclass
class RayConfig:
    address: str | None = None
    """Ray cluster address (`auto`, `ray://host:10001`); empty = embedded local Ray (or RAY_ADDRESS)"""
    workers: int | None = None
    """parallel tasks/actors; default: the cluster's CPU count"""
    retries: int = 3
    """how often the work of a lost Ray worker (process or node) is tried again before the run stops"""

    def __post_init__(self) -> None:
        if self.workers is not None and self.workers < 1:
            raise ValueError("workers: must be at least 1 (or null for the cluster's CPU count)")
        if self.retries < 0:
            raise ValueError("retries: must be 0 or more")


@runtime_checkable
class BindsRunDir(Protocol):
    """A stage config naming files relative to the run directory (a scorer's model), bound to it here."""

    def bind_run_dir(self, run_dir: str | os.PathLike) -> None: ...


@runtime_checkable
class DeclaresColumns(Protocol):
    """A stage config that names the columns its stage adds (two stages may not add the same one)."""

    def columns(self) -> list[str]: ...


@dataclass
class StageSpec:
    kind: str
    name: str
    config: Any  # the stage's own config dataclass

    def load(self):
        """Construct the stage (in the process that runs it)."""
        if ":" in self.kind:  # a user's own stage class, `module:Class` (stages/filter/user.py)
            return user_stage_class(self.kind)(self.config, self.name)
        module, _, stage_cls = STAGE_KINDS[self.kind]
        return getattr(importlib.import_module(module), stage_cls)(self.config, self.name)


@dataclass
class RunConfig:
    name: str
    """run name (shown in reports)"""
    out: str
    """run directory: a path, or `s3://bucket/prefix` (run in a local staging directory and pushed
    to the bucket as it goes: pipeline/running/remote.py)"""
    inputs: list[InputSpec]
    """raw inputs, read by the ingest stage"""
    ingest: IngestConfig = field(default_factory=IngestConfig)
    """ingest limits and sharding"""
    ray: RayConfig = field(default_factory=RayConfig)
    """where the stages run"""
    stages: list[dict] = field(default_factory=list)
    """stages after ingest, in order (resolved into `stage_specs`)"""

    def __post_init__(self) -> None:
        remote = bool(URL.match(self.out))
        if remote:  # the run works in a local staging directory (pipeline/running/remote.py)
            from curate.pipeline.running.remote import check_url

            check_url(self.out)
        if not self.inputs:
            raise ValueError("inputs: give at least one input (a path, directory, glob or URL)")
        for i, spec in enumerate(self.inputs):
            _check_input_url(i, spec.path)
        self.stage_specs: list[StageSpec] = [_stage_spec(i, s) for i, s in enumerate(self.stages)]
        for spec in self.stage_specs:  # model paths in stage configs are relative to the run directory
            if isinstance(spec.config, BindsRunDir) and not remote:  # bound once staged
                spec.config.bind_run_dir(self.out)
        names = ["ingest"] + [s.name for s in self.stage_specs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise ValueError(f"stages: stage name {dup!r} is used twice; give each a distinct `name`")
        # Two stages adding the same column would fail only when the second one meets the first
        # one's output, after the first has processed the whole corpus: refuse it here.
        writers: dict[str, str] = {}
        for spec in self.stage_specs:
            for col in spec.config.columns() if isinstance(spec.config, DeclaresColumns) else []:
                if col in writers:
                    raise ValueError(f"stages: stage {spec.name!r} writes column `{col}`, which stage "
                                     f"{writers[col]!r} already writes; stages never rewrite a column "
                                     f"(give one a different scorer name or turn the column off)")
                writers[col] = spec.name

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("stage_specs", None)
        return d


URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _check_input_url(i: int, path: str) -> None:
    """An input URL's file system must exist and be one every Ray worker can reach."""
    if not URL.match(path):
        return
    from curate.stages.inputs.objstore import PYARROW_SCHEMES

    if path.split("://", 1)[0].lower() in PYARROW_SCHEMES:
        return  # read through pyarrow's own file systems on every worker (stages/inputs/objstore.py)
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    field = f"inputs[{i}].path"
    protocol = path.split("://", 1)[0]
    try:
        fs_cls = fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as e:  # unknown protocol, or its package is not installed
        raise ConfigError(field, f"{path!r}: {e}") from None
    if issubclass(fs_cls, MemoryFileSystem):
        raise ConfigError(field, f"{path!r}: a {protocol}:// file system lives inside one process, so the Ray "
                                 f"workers that read the inputs cannot see it; write the data to a file (or an "
                                 f"object store) and give that path")


def _stage_spec(i: int, entry: Any) -> StageSpec:
    path = f"stages[{i}]"
    if not isinstance(entry, dict) or "kind" not in entry:
        raise ConfigError(path, f"each stage needs a `kind`; valid kinds: {', '.join(sorted(STAGE_KINDS))}")
    entry = dict(entry)
    kind = entry.pop("kind")
    if kind == INGEST:  # load_config took a first entry into `ingest`: this one is elsewhere
        raise ConfigError(f"{path}.kind", "ingest runs first: list it as the first entry of `stages:` (or configure it "
                                          "in the `ingest:` section), never later")
    if isinstance(kind, str) and ":" in kind:
        return _user_stage_spec(path, kind, entry)
    if kind not in STAGE_KINDS:
        raise ConfigError(f"{path}.kind", f"unknown stage kind {kind!r}; valid kinds: {', '.join(sorted(STAGE_KINDS)) or '(none)'}")
    name = _stage_name(path, entry.pop("name", kind))
    module, cfg_cls, _ = STAGE_KINDS[kind]
    cfg = build(getattr(importlib.import_module(module), cfg_cls), entry, path)
    return StageSpec(kind, name, cfg)


def _stage_name(path: str, name: Any) -> str:
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{path}.name", f"{name!r} is not a valid stage name (letters, digits, '_' and '-')")
    if name in RESERVED_NAMES:
        raise ConfigError(f"{path}.name", f"{name!r} is reserved (catalog views and run folders: {', '.join(RESERVED_NAMES)})")
    return name


def _user_stage_spec(path: str, kind: str, entry: dict) -> StageSpec:
    """A stage kind given as `module:Class`: its fields build `Class.Config` (stages/filter/user.py)."""
    try:
        cls = user_stage_class(kind)
    except ValueError as e:
        raise ConfigError(f"{path}.kind", str(e)) from None
    name = _stage_name(path, entry.pop("name", cls.__name__.lower()))
    config_cls = getattr(cls, "Config", None)
    if config_cls is None and entry:
        raise ConfigError(path, f"{kind} declares no `Config` dataclass, so it takes no fields; got {', '.join(sorted(entry))}")
    return StageSpec(kind, name, build(config_cls or NoFields, entry, path))


def load_config(path: str | Path | None = None, data: dict | None = None, *, inputs: list[str] | None = None,
                out: str | None = None, workers: int | None = None, address: str | None = None) -> RunConfig:
    """Read and validate a config; CLI overrides replace the config's inputs, run dir and Ray settings."""
    if data is None:
        try:
            data = load_yaml(Path(path).read_text(), str(path))
        except FileNotFoundError:
            raise ConfigError("config", f"{path} does not exist") from None
        except yaml.YAMLError as e:
            raise ConfigError("config", f"{path} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError("config", "the top level must be a mapping with name, out, inputs, stages")
    data = dict(data)
    data.setdefault("name", Path(path).stem if path else "run")
    if inputs:
        data["inputs"] = [{"path": p} for p in inputs]
    if out:
        data["out"] = out
    if workers is not None or address is not None:
        ray_cfg = dict(data.get("ray") or {})
        if workers is not None:
            ray_cfg["workers"] = workers
        if address is not None:
            ray_cfg["address"] = address
        data["ray"] = ray_cfg
    if "out" not in data:
        data["out"] = os.path.join("runs", str(data["name"]))
    return build(RunConfig, _listed_ingest(data), "")


INGEST = "ingest"


def _listed_ingest(data: dict) -> dict:
    """`stages:` may begin with `{kind: ingest, ...fields}`: the same as those fields in the
    `ingest:` section (the shorthand), so both give the same run and config hashes. Giving both is
    refused, as is listing ingest anywhere but first (`_stage_spec`)."""
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages or not isinstance(stages[0], dict) or stages[0].get("kind") != INGEST:
        return data
    if data.get("ingest") is not None:
        raise ConfigError("stages[0].kind", "ingest is configured twice, by the `ingest:` section and by the first "
                                            "entry of `stages:`; keep one")
    fields = {k: v for k, v in stages[0].items() if k != "kind"}
    if fields.pop("name", INGEST) != INGEST:
        raise ConfigError("stages[0].name", "the ingest stage is always named `ingest`")
    return {**data, "ingest": build(IngestConfig, fields, "stages[0]"), "stages": stages[1:]}
