"""A job's argv and config, checked the way the job will run them, before anything reaches Ray.

The argv is parsed by the CLI's own parser (no abbreviations: pipeline/commands/parser.py) without
the options the service sets; any of those the job's own arguments set, in whatever spelling the
parser accepts, is refused. Then every path the parsed namespace and the *loaded* config name is
checked: globs expanded, folders walked, symlinks resolved, each entry inside the token's own
prefixes under the root or a data folder of the service. The paths a config type holds are
declared once here (`CONFIG_PATHS`); tests/test_serve_validate.py walks the config dataclasses so
that a new path field cannot go unchecked.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import os
from dataclasses import dataclass
from pathlib import Path

from curate.pipeline.errors import CurateError
from curate.pipeline.serve import runs

KINDS = ("run", "plan", "pack", "train", "eval")
# Options the service sets for each kind (by argparse dest): where a job writes, which run it
# reads, where and on what it runs. A job that sets one is refused, however it spells it.
SERVICE_SET = {"run": ("out", "inputs", "address"), "plan": ("out",), "pack": ("address",),
               "train": ("out", "ray", "gpu", "address"), "eval": ("run", "out")}
# Options whose values are paths (or NAME=PATH for eval's --set), by argparse dest.
PATH_OPTIONS = {"run": (), "plan": (), "pack": ("plan", "tokenizer", "eval_jsonl"),
                "train": ("base", "plan", "config"), "eval": ("set", "qa", "tokenizer")}
# Path fields of each config dataclass: `a.b`, `a[].b` for a list of dataclasses. "run": a relative
# path is read against the run directory (the stage's bind_run_dir); "abs": it must be absolute
# (the job's working folder is Ray's, not the service's).
CONFIG_PATHS: dict[str, tuple[tuple[str, str], ...]] = {
    "RunConfig": (("inputs[].path", "abs"),),
    "QualityConfig": (("model", "run"),),
    "DomainConfig": (("model", "run"),),
    "DecontaminateConfig": (("sets[].path", "abs"),),
    "LMScoreConfig": (("models[].path", "run"), ("models[].tokenizer", "run")),
    "TokenizeConfig": (("tokenizer", "run"), ("plan", "run")),
}
# Fields whose names look like paths but are not, with why (the test walks these too).
NOT_PATHS = {
    "RunConfig.out": "set by the service to the job's run directory",
    "QualityConfig.scorer": "a column-name suffix",
    "LMScoreConfig.filter_model": "the `name` of one of `models`",
    "FilterConfig.function": "user code: the filter kind is refused from the service",
    "PackStageConfig.tokenizer.path": "set by `curate pack`; a config cannot list the pack stage",
    "PackStageConfig.eval_dir": "set by `curate pack`; a config cannot list the pack stage",
}
# Stage kinds that import the user's code; a service job may not name code to run.
CODE_KINDS = ("filter",)


class BadJob(ValueError):
    """Parameters that the CLI would refuse, or that leave the token's reach: answered 4xx before
    anything is submitted."""


@dataclass
class Reach:
    """Folders a job may read: the token's own prefixes under the root, and the data folders."""

    root: Path
    prefixes: list[str]
    data_dirs: list[Path]

    def folders(self) -> list[Path]:
        """The resolved folders: a prefix `team-a/` is ROOT/team-a; `team` is every folder of the
        root whose name starts with it, as it is now."""
        root = self.root.resolve()
        out = [d.resolve() for d in self.data_dirs]
        for p in self.prefixes:
            if p in ("", "/"):
                out.append(root)
            elif p.endswith("/"):
                out.append((root / p.rstrip("/")).resolve())
            else:
                out += [f.resolve() for f in root.glob(glob.escape(p) + "*") if self.allows(f.resolve())]
        return out

    def allows(self, real: Path) -> bool:
        """`real` (resolved) lies in a data folder or under a token prefix: a prefix that does not
        end in `/` (`team`) reaches every run name that starts with it (`team-a`, `team2`)."""
        root = self.root.resolve()
        if any(real.is_relative_to(d.resolve()) for d in self.data_dirs):
            return True
        if not real.is_relative_to(root):
            return False
        rel = real.relative_to(root).as_posix()
        rel = "" if rel == "." else rel
        return any(p in ("", "/") or rel.startswith(p) or (rel + "/").startswith(p) for p in self.prefixes)


def entries(path: str) -> list[Path]:
    """Everything reading `path` could open: the glob's matches, a folder's whole tree (symlinked
    folders inside it walked too), each as written (not resolved)."""
    if any(c in path for c in "*?["):
        tops = [Path(p) for p in sorted(glob.glob(path, recursive=True))]
    else:
        tops = [Path(path)]
    out: list[Path] = []
    seen: set[Path] = set()
    todo = list(tops)
    while todo:
        p = todo.pop()
        out.append(p)
        real = p.resolve()
        if real.is_dir() and real not in seen:
            seen.add(real)
            try:
                todo.extend(sorted(real.iterdir()))
            except OSError:
                continue  # unreadable: the reader reports it, and it reads nothing
    return out


def check_path(reach: Reach, value: str, what: str, base: Path | None = None) -> None:
    """Refuse `value` unless it, and every entry under it, resolves inside `reach`."""
    path = Path(value)
    if not path.is_absolute():
        if base is None:  # the job runs in a working folder of Ray's, not the service's
            raise BadJob(f"{what}: {value!r} is relative; give an absolute path under the runs root or a data folder")
        path = base / path
    for entry in entries(str(path)):
        if not reach.allows(entry.resolve()):
            shown = f"{value!r}" if entry == path else f"{value!r} (through {str(entry)!r})"
            raise BadJob(f"{what}: {shown} is outside this token's runs ({', '.join(reach.prefixes)}) "
                         f"and the service's data folders")


def field_values(obj, dotted: str) -> list[tuple[str, str]]:
    """(field path, value) of every non-empty value at `dotted` (`sets[].path`) in a dataclass."""
    head, _, rest = dotted.partition(".")
    name, many = head.removesuffix("[]"), head.endswith("[]")
    value = getattr(obj, name, None)
    items = list(enumerate(value or [])) if many else [(None, value)]
    out = []
    for i, item in items:
        label = name if i is None else f"{name}[{i}]"
        if rest:
            out += [(f"{label}.{k}", v) for k, v in field_values(item, rest)]
        elif item:
            out.append((label, str(item)))
    return out


def check_config_paths(reach: Reach, cfg, where: str, run_dir: Path) -> None:
    for dotted, base in CONFIG_PATHS.get(type(cfg).__name__, ()):
        for label, value in field_values(cfg, dotted):
            check_path(reach, value, f"{where}{label}", run_dir if base == "run" else None)


def parse(argv: list[str]) -> argparse.Namespace:
    """The CLI's own parser over argv; its usage errors become BadJob (argparse would exit)."""
    from curate.pipeline.commands.parser import build_parser

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
            return build_parser().parse_args(argv)
    except SystemExit:
        lines = err.getvalue().strip().splitlines()
        raise BadJob(lines[-1] if lines else "bad arguments") from None


def refuse_service_options(kind: str, ns: argparse.Namespace) -> None:
    from curate.pipeline.commands.parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[kind]
    for action in sub._actions:
        if action.dest in SERVICE_SET[kind] and getattr(ns, action.dest) != action.default:
            raise BadJob(f"{'/'.join(action.option_strings)} is set by the service, not by a job")


def check_run_config(reach: Reach, config, run_dir: Path):
    from curate.pipeline.running.config import load_config

    if not isinstance(config, dict):
        raise BadJob("a run job needs `config`: the pipeline config as a mapping (as in configs/*.yaml)")
    if isinstance(config.get("ray"), dict) and config["ray"].get("address"):
        raise BadJob("ray.address: the service decides where a job runs; leave it out of the config")
    for i, stage in enumerate(config.get("stages") or []):
        kind = stage.get("kind") if isinstance(stage, dict) else None
        if isinstance(kind, str) and (kind in CODE_KINDS or ":" in kind):
            raise BadJob(f"stages[{i}].kind: {kind!r} runs code named by the config; the service runs only "
                         f"the built-in stages")
    try:
        cfg = load_config(data=config, out=str(run_dir))
    except CurateError as e:
        raise BadJob(str(e)) from None
    for i, spec in enumerate(cfg.inputs):
        if "://" in spec.path:
            raise BadJob(f"inputs[{i}].path: {spec.path!r} is a URL; a service job reads files under the runs root "
                         f"or a data folder")
    check_config_paths(reach, cfg, "", run_dir)
    for i, spec in enumerate(cfg.stage_specs):
        check_config_paths(reach, spec.config, f"stages[{i}].", run_dir)
    return cfg


def command(reach: Reach, kind: str, run: str, config: dict | None, args: list) -> tuple[list[str], dict | None]:
    """argv of the curate command for this job, validated as above; for `run` also the config
    (the job reads it from a file the service writes)."""
    if kind not in KINDS:
        raise BadJob(f"kind must be one of {', '.join(KINDS)} (got {kind!r})")
    if not isinstance(args, list) or not all(isinstance(a, (str, int, float)) for a in args):
        raise BadJob("args must be a list of strings (the command's options)")
    run_dir = runs.run_dir(reach.root, run, must_exist=kind != "run")
    args = [str(a) for a in args]
    if kind == "run":
        refuse_service_options(kind, parse(["run", "CONFIG", *args]))
        check_run_config(reach, config, run_dir)
        return ["run", "CONFIG", *args, "--out", str(run_dir)], config
    positional = [str(run_dir / "train" / "model")] if kind == "eval" else [str(run_dir)]
    ns = parse([kind, *positional, *args])
    refuse_service_options(kind, ns)
    for opt in PATH_OPTIONS[kind]:
        values = getattr(ns, opt, None)
        for v in values if isinstance(values, list) else [values]:
            if v is not None:
                v = str(v)
                check_path(reach, v.split("=", 1)[1] if opt == "set" and "=" in v else v, f"--{opt.replace('_', '-')}")
    if kind == "train":
        from curate.training.cli import _parse_sets
        from curate.training.config import load_train_config

        try:
            load_train_config(ns.config, _parse_sets(ns.set))
        except (CurateError, ValueError, OSError) as e:
            raise BadJob(str(e)) from None
    return [kind, *positional, *args, *(["--run", str(run_dir)] if kind == "eval" else [])], None


def allowed_roots_env(reach: Reach) -> str:
    """CURATE_ALLOWED_ROOTS for the job's process (records/allowed.py reads it)."""
    return os.pathsep.join(str(f) for f in reach.folders())
