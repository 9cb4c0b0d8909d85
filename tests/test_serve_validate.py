"""A job submitted to `curate serve` is validated the way it will run, before any Ray call: a
`read,submit` token limited to `team-a/` cannot write outside its runs, read another team's data,
reach a file through a symlink or a config path field, or set an option the service sets by
abbreviating it. The service here points at a Ray address where nothing listens, so a job that
passes validation answers 503 and one that does not answers 4xx. The job's process re-checks its
inputs against the folders the service passes it (CURATE_ALLOWED_ROOTS)."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import random
import re
import typing

import httpx
import pytest

from curate.pipeline.commands.parser import build_parser
from curate.pipeline.running.config import RunConfig, load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.running.stage_table import STAGE_KINDS
from curate.pipeline.serve import cmd as cmd_serve
from curate.pipeline.serve import validate
from curate.pipeline.serve.app import ServeConfig
from curate.pipeline.serve.auth import add_token
from curate.records.allowed import ENV
from curate.records.errors import CurateError
from curate.stages.inputs.ingest import InputSpec, IngestConfig, plan_tasks
from curate.training.config import TrainConfig
from test_pack_common import load_docs
from test_serve import Server

# A field whose name says it holds a path (or code to import) must be declared one way or the other.
PATHISH = re.compile(r"(^|_)(path|paths|model|models|tokenizer|dir|file|files|plan|base|out|function|sets)$")


@pytest.fixture(scope="module")
def svc(tmp_path_factory, system_corpus):
    tmp = tmp_path_factory.mktemp("validate")
    root, data = tmp / "runs", tmp / "data"
    data.mkdir()
    (data / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in load_docs(system_corpus, limit=20)))
    for run in ("team-a/demo", "team-b/demo"):
        run_pipeline(load_config(data={"name": "d", "out": str(root / run), "inputs": [{"path": str(data / "in.jsonl")}],
                                       "stages": []}), quiet=True, executor="local")
    (root / "team-a" / "evil").symlink_to("/etc")
    (root / "team-a" / "mixed").mkdir()
    (root / "team-a" / "mixed" / "ok.jsonl").write_text('{"text": "x"}\n')
    (root / "team-a" / "mixed" / "link.jsonl").symlink_to("/etc/passwd")
    outside = tmp / "outside"
    outside.mkdir()
    (outside / "tok.model").write_text("x")
    tokens = tmp / "tokens.json"
    tok = add_token(tokens, "a", ["read", "submit"], ["team-a/"])
    server = Server(ServeConfig(root=root, tokens=tokens, ray_address="http://127.0.0.1:9", data_dirs=[data]))
    yield {"url": server.url, "tok": tok, "root": root, "data": data, "outside": outside}
    server.close()


def submit(svc, body) -> httpx.Response:
    return httpx.post(svc["url"] + "/api/jobs", json=body, timeout=60, headers={"Authorization": f"Bearer {svc['tok']}"})


def run_job(svc, inputs=None, stages=(), args=(), **extra) -> dict:
    inputs = inputs or [str(svc["root"] / "team-a" / "demo" / "ingest")]
    config = {"name": "j", "inputs": [{"path": p} for p in inputs], "stages": list(stages), **extra}
    return {"kind": "run", "run": "team-a/j", "config": config, "args": list(args)}


def test_bypasses_are_refused_before_any_ray_call(svc):
    R, out = svc["root"], svc["outside"]
    cases = {
        "--out outside": (run_job(svc, args=["--out", str(out)]), "set by the service"),
        "--out=another team": (run_job(svc, args=[f"--out={R}/team-b/demo"]), "set by the service"),
        "--input": (run_job(svc, args=["--input", str(svc["data"] / "in.jsonl")]), "set by the service"),
        "abbreviated --addr": (run_job(svc, args=["--addr", "ray://127.0.0.1:10001"]), "unrecognized"),
        "--address": (run_job(svc, args=["--address", "auto"]), "set by the service"),
        "config ray.address": (run_job(svc, ray={"address": "ray://10.0.0.1:10001"}), "ray.address"),
        "glob through a symlink": (run_job(svc, inputs=[f"{R}/team-a/evi?/passwd"]), "outside"),
        "folder holding a link out": (run_job(svc, inputs=[f"{R}/team-a/mixed"]), "link.jsonl"),
        "another team's data": (run_job(svc, inputs=[f"{R}/team-b/demo/ingest"]), "outside"),
        "a URL input": (run_job(svc, inputs=["s3://bucket/x.jsonl"]), "URL"),
        "decontaminate set": (run_job(svc, stages=[{"kind": "decontaminate", "sets": [{"name": "x", "path": "/etc/passwd"}]}]),
                              "stages[0].sets[0].path"),
        "quality model": (run_job(svc, stages=[{"kind": "quality", "model": "/etc/passwd"}]), "stages[0].model"),
        "run-relative model out": (run_job(svc, stages=[{"kind": "quality", "model": "../../../outside/tok.model"}]),
                                   "stages[0].model"),
        "tokenizer": (run_job(svc, stages=[{"kind": "tokenize", "tokenizer": str(out / "tok.model")}]), "tokenizer"),
        "lm_score model": (run_job(svc, stages=[{"kind": "lm_score", "models": [{"path": str(out)}]}]), "models[0].path"),
        "filter code": (run_job(svc, stages=[{"kind": "filter", "function": "os:remove"}]), "runs code"),
        "module:Class kind": (run_job(svc, stages=[{"kind": "os:Stage"}]), "runs code"),
        "train --ra": ({"kind": "train", "run": "team-a/demo", "args": ["--base", str(R / "team-a"), "--ra", "4"]},
                       "unrecognized"),
        "train --gpu": ({"kind": "train", "run": "team-a/demo", "args": ["--base", str(R / "team-a"), "--gpu"]},
                        "set by the service"),
        "train --base outside": ({"kind": "train", "run": "team-a/demo", "args": ["--base", str(out)]}, "outside"),
        "eval --ru": ({"kind": "eval", "run": "team-a/demo", "args": ["--ru", f"{R}/team-b/demo"]}, "unrecognized"),
        "eval --run": ({"kind": "eval", "run": "team-a/demo", "args": ["--run", f"{R}/team-b/demo"]}, "set by the service"),
        "pack --tokenizer": ({"kind": "pack", "run": "team-a/demo", "args": ["--tokenizer", str(out / "tok.model")]}, "outside"),
        "plan --out": ({"kind": "plan", "run": "team-a/demo", "args": ["--out", str(R / "team-a" / "p.json")]},
                       "set by the service"),
        "args not strings": ({"kind": "plan", "run": "team-a/demo", "args": [{"a": 1}]}, "args"),
    }
    for name, (body, words) in cases.items():
        r = submit(svc, body)
        assert 400 <= r.status_code < 500, (name, r.status_code, r.text)
        assert words in r.json()["detail"], (name, r.text)
    # The same jobs within the token's reach pass validation and reach (the absent) Ray: 503.
    for body in (run_job(svc), run_job(svc, inputs=[str(svc["data"] / "in.jsonl")], args=["--workers", "2"]),
                 {"kind": "plan", "run": "team-a/demo", "args": ["--seq-len", "512"]}):
        r = submit(svc, body)
        assert r.status_code == 503, r.text


def _walk(cls, prefix=""):
    """(dotted field, annotation) of a config dataclass and the dataclasses inside it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        inner = [tp, *typing.get_args(tp), *(a for t in typing.get_args(tp) for a in typing.get_args(t))]
        nested = [a for a in inner if dataclasses.is_dataclass(a)]
        many = typing.get_origin(tp) is list or any(typing.get_origin(t) is list for t in typing.get_args(tp))
        if nested:
            yield from _walk(nested[0], f"{prefix}{f.name}{'[]' if many else ''}.")
        else:
            yield f"{prefix}{f.name}", tp


def test_every_path_field_of_every_config_is_declared():
    classes = [RunConfig, TrainConfig] + [getattr(importlib.import_module(m), c) for m, c, _ in STAGE_KINDS.values()]
    declared = {f"{cls}.{d}" for cls, fields in validate.CONFIG_PATHS.items() for d, _ in fields}
    seen, missing = set(), []
    for cls in classes:
        for dotted, tp in _walk(cls):
            name = f"{cls.__name__}.{dotted}"
            seen.add(name)
            if PATHISH.search(dotted.rsplit(".", 1)[-1].removesuffix("[]")) and "str" in str(tp) \
                    and name not in declared and name not in validate.NOT_PATHS:
                missing.append(name)
    assert not missing, f"declare these in pipeline/serve/validate.py (CONFIG_PATHS or NOT_PATHS): {missing}"
    stale = (declared | set(validate.NOT_PATHS)) - seen
    assert not stale, f"declared fields that no config has: {stale}"


def test_no_parser_takes_abbreviations():
    parser = build_parser([cmd_serve])
    todo, n = [parser], 0
    while todo:
        p = todo.pop()
        n += 1
        assert p.allow_abbrev is False, p.prog
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += list(a.choices.values())
    assert n > 15  # curate and each of its commands
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "c.yaml", "--ou", "x"])


def test_ingest_rechecks_its_inputs_at_run_time(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "a.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "secret.jsonl").write_text('{"text": "secret"}\n')
    spec = [InputSpec(path=str(allowed))]
    assert plan_tasks(spec, IngestConfig())  # no CURATE_ALLOWED_ROOTS: a CLI run reads what it is given
    monkeypatch.setenv(ENV, str(allowed))
    assert len(plan_tasks(spec, IngestConfig())) == 1
    (allowed / "b.jsonl").symlink_to(tmp_path / "secret.jsonl")  # placed after the service validated the job
    with pytest.raises(CurateError, match="b.jsonl.*outside the folders"):
        plan_tasks(spec, IngestConfig())


def test_fuzzed_jobs_never_answer_500(svc):
    rng = random.Random(14)
    values = [None, "", "x", 0, -1, 1.5, True, [], {}, ["--out"], ["--seq-len", "x"], {"kind": "quality"},
              [{"kind": "quality", "model": None}], [{"path": None}], [{"path": 5}], "../..", "/etc/passwd",
              f"{svc['root']}/team-a/evi?/*", ["-h"], ["--", "--out", "x"], [[1]], {"address": 1}]
    for _ in range(120):
        config = {k: rng.choice(values) for k in rng.sample(["name", "inputs", "stages", "ray", "ingest", "out"], 3)}
        body = {"kind": rng.choice(["run", "plan", "pack", "train", "eval", None, 1]),
                "run": rng.choice(["team-a/j", "team-a/demo", None, "team-b/demo", "../x"]),
                "config": rng.choice([config, None, []]), "args": rng.choice(values)}
        r = submit(svc, body)
        assert r.status_code in (400, 403, 404, 422, 503), (body, r.status_code, r.text)
