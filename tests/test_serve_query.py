"""Queries through `curate serve` and `curate query`: every DuckDB type in every format, every bad
field a 4xx with a message (fuzzed: no route answers 500), a damaged run a 409 naming the file, a
long EXPLAIN answered fast, a result size cap, a CLI time limit; and the service's smaller rules
(audit log 0600, X-Forwarded-For only from named proxies, no blank token names)."""

from __future__ import annotations

import csv
import io
import json
import os
import random
import shutil
import stat
import subprocess
import sys
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.pipeline import cli
from curate.pipeline.catalog.guard import check_read_only
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.serve.app import ServeConfig
from curate.pipeline.serve.auth import add_token
from test_pack_common import load_docs
from test_serve import ROUTES, Server, free_port

# One column of each DuckDB type (values fixed, so the expected JSON is too).
ALL_TYPES = """SELECT true AS c_bool, 1::TINYINT AS c_tinyint, 2::SMALLINT AS c_smallint, 3 AS c_int, 4::BIGINT AS c_bigint,
 170141183460469231731687303715884105727::HUGEINT AS c_hugeint, 5::UTINYINT AS c_utinyint, 6::USMALLINT AS c_usmallint,
 7::UINTEGER AS c_uinteger, 18446744073709551615::UBIGINT AS c_ubigint,
 340282366920938463463374607431768211455::UHUGEINT AS c_uhugeint, 1.5::FLOAT AS c_float, 'NaN'::DOUBLE AS c_nan,
 'inf'::DOUBLE AS c_inf, '-inf'::FLOAT AS c_ninf, 123.45::DECIMAL(10,2) AS c_decimal, 1.5 AS c_literal,
 DATE '2024-05-01' AS c_date, TIME '10:11:12.5' AS c_time, TIMETZ '10:11:12+02' AS c_timetz,
 TIMESTAMP '2024-05-01 10:00:00' AS c_ts, TIMESTAMPTZ '2024-05-01 10:00:00+00' AS c_tstz,
 TIMESTAMP_S '2024-05-01 10:00:00' AS c_ts_s, TIMESTAMP_MS '2024-05-01 10:00:00.123' AS c_ts_ms,
 TIMESTAMP_NS '2024-05-01 10:00:00.123456789' AS c_ts_ns, INTERVAL '1 month 2 days 3 seconds' AS c_interval,
 'héllo' AS c_varchar, '\\xAA\\xFF'::BLOB AS c_blob, '101'::BIT AS c_bit,
 'f2e01167-b42f-47a6-8d0a-4c27eee1e35a'::UUID AS c_uuid, [1, 2, NULL] AS c_list, [[1.5, 'NaN'::DOUBLE]] AS c_nested,
 {'a': 1, 'b': [DATE '2024-01-01']} AS c_struct, MAP {'k': 1.5::DECIMAL(4,2)} AS c_map, MAP {1: 'x'} AS c_map_int,
 [1, 2, 3]::INTEGER[3] AS c_array, 'b'::ENUM('a', 'b') AS c_enum, union_value(num := 2) AS c_union, NULL AS c_null,
 '{"x": 1}'::JSON AS c_json, 123456789012345678901234567890::BIGNUM AS c_bignum, [INTERVAL 1 DAY] AS c_interval_list"""
EXPECTED = {"c_hugeint": 170141183460469231731687303715884105727, "c_ubigint": 18446744073709551615,
            "c_uhugeint": "340282366920938463463374607431768211455", "c_nan": None, "c_inf": None, "c_ninf": None,
            "c_decimal": "123.45", "c_literal": "1.5", "c_date": "2024-05-01", "c_time": "10:11:12.500000",
            "c_timetz": "10:11:12+02", "c_ts": "2024-05-01T10:00:00", "c_tstz": "2024-05-01T10:00:00+00:00",
            "c_ts_ns": "2024-05-01T10:00:00.123456789",
            "c_interval": {"months": 1, "days": 2, "nanoseconds": 3_000_000_000}, "c_varchar": "héllo",
            "c_blob": "qv8=", "c_bit": "101", "c_uuid": "f2e01167-b42f-47a6-8d0a-4c27eee1e35a",
            "c_list": [1, 2, None], "c_nested": [[1.5, None]], "c_struct": {"a": 1, "b": ["2024-01-01"]},
            "c_map": [["k", "1.50"]], "c_map_int": [[1, "x"]], "c_array": [1, 2, 3], "c_enum": "b", "c_null": None,
            "c_bignum": "123456789012345678901234567890"}


@pytest.fixture(scope="module")
def svc(tmp_path_factory, system_corpus):
    tmp = tmp_path_factory.mktemp("servequery")
    root = tmp / "runs"
    docs = [{**d, "date": f"2024-05-0{1 + i % 9}T10:00:00Z"} for i, d in enumerate(load_docs(system_corpus, limit=60))]
    (tmp / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    run = root / "team-a" / "one"
    run_pipeline(load_config(data={"name": "q", "out": str(run), "inputs": [{"path": str(tmp / "in.jsonl")}],
                                   "ingest": {"shard_docs": 10}, "stages": [{"kind": "exact_dedup"}]}),
                 quiet=True, executor="local")
    for name in ("truncated", "linked"):
        shutil.copytree(run, root / "team-a" / name)
    shard = sorted((root / "team-a" / "truncated" / "exact_dedup").glob("*.parquet"))[0]
    shard.write_bytes(shard.read_bytes()[:100])
    linked = sorted((root / "team-a" / "linked" / "exact_dedup").glob("*.parquet"))[0]
    shutil.move(linked, tmp / "elsewhere.parquet")
    linked.symlink_to(tmp / "elsewhere.parquet")
    tokens = tmp / "tokens.json"
    tok = add_token(tokens, "a", ["read", "submit"], ["team-a/"])
    server = Server(ServeConfig(root=root, tokens=tokens, audit_log=tmp / "audit.jsonl", query_timeout_s=5.0,
                                max_response_bytes=1 << 20))
    yield {"url": server.url, "tok": tok, "root": root, "run": run, "tmp": tmp, "shard": shard, "linked": linked}
    server.close()


def post(svc, path, client=None, **kw) -> httpx.Response:
    return (client or httpx).post(svc["url"] + path, timeout=60, headers={"Authorization": f"Bearer {svc['tok']}"}, **kw)


def query(svc, body, run="team-a/one", client=None) -> httpx.Response:
    return post(svc, f"/api/runs/{run}/query", client, json=body)


def test_every_duckdb_type_in_every_format_over_http(svc):
    r = query(svc, {"sql": ALL_TYPES})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert {k: row[k] for k in EXPECTED} == EXPECTED
    assert r.json()["non_finite"] == 4  # NaN, inf, -inf, and the NaN inside c_nested
    table = pa.ipc.open_stream(query(svc, {"sql": ALL_TYPES, "format": "arrow"}).content).read_all()
    assert table.num_rows == 1 and table.column_names == r.json()["columns"]
    parquet = pq.read_table(io.BytesIO(query(svc, {"sql": ALL_TYPES, "format": "parquet"}).content))
    assert json.loads(parquet.column("c_interval")[0].as_py()) == EXPECTED["c_interval"]
    assert str(parquet.column("c_decimal")[0].as_py()) == "123.45"
    cells = next(csv.DictReader(io.StringIO(query(svc, {"sql": ALL_TYPES, "format": "csv"}).text)))
    for col in ("c_list", "c_struct", "c_map", "c_interval", "c_nested"):
        assert json.loads(cells[col]) == EXPECTED[col], col
    assert cells["c_blob"] == "qv8=" and cells["c_uhugeint"] == EXPECTED["c_uhugeint"]
    for sql in ("SELECT * FROM docs LIMIT 1", "SUMMARIZE docs", "SELECT 1.5", "SELECT * FROM shards"):
        assert query(svc, {"sql": sql}).status_code == 200, sql


def test_every_duckdb_type_through_the_cli(svc, tmp_path):
    rows = {}
    for fmt in ("json", "csv", "parquet", "table"):
        out = tmp_path / f"out.{fmt}"
        assert cli.main(["query", str(svc["run"]), ALL_TYPES, "--format", fmt, "-o", str(out)]) == 0
        rows[fmt] = out.read_bytes()
    assert {k: v for k, v in json.loads(rows["json"]).items() if k in EXPECTED} == EXPECTED
    assert json.loads(next(csv.DictReader(io.StringIO(rows["csv"].decode())))["c_map"]) == EXPECTED["c_map"]
    assert pq.read_table(io.BytesIO(rows["parquet"])).num_rows == 1


def test_bad_fields_are_400_and_the_connection_survives(svc):
    with httpx.Client() as client:
        for body in ({"sql": "SELECT 1", "format": ["json"]}, {"sql": "SELECT 1", "format": "xml"},
                     {"sql": "SELECT 1", "max_rows": "abc"}, {"sql": "SELECT 1", "max_rows": None},
                     {"sql": "SELECT 1", "max_rows": -5}, {"sql": "SELECT 1", "max_rows": True}, {"sql": 5},
                     {"sql": "DELETE FROM docs"}, {"sql": "SELECT nope FROM docs"}):
            r = query(svc, body, client=client)
            assert r.status_code == 400 and r.json()["detail"], (body, r.text)
            assert query(svc, {"sql": "SELECT 1 AS x"}, client=client).json()["rows"] == [{"x": 1}]
    assert query(svc, {"sql": "SELECT 1 AS x", "max_rows": 0}).json()["rows"] == []


def test_long_explain_is_answered_fast_and_the_guard_is_linear(svc):
    sql = "EXPLAIN (" + ", ".join(["ANALYZE"] * 4000) + ") SELECT 1"
    t = time.perf_counter()
    r = query(svc, {"sql": sql})
    assert time.perf_counter() - t < 3 and r.status_code in (200, 400), r.text
    t = time.perf_counter()
    check_read_only("EXPLAIN (" + ", ".join(["ANALYZE"] * 64000) + ") SELECT 1")  # 16x longer
    assert time.perf_counter() - t < 3


def test_damaged_run_is_409_naming_the_file(svc, capsys):
    for run, name in (("team-a/truncated", svc["shard"].name), ("team-a/linked", svc["linked"].name)):
        r = query(svc, {"sql": "SELECT count(*) FROM docs"}, run=run)
        assert r.status_code == 409 and name in r.json()["detail"], r.text
        capsys.readouterr()
        assert cli.main(["query", str(svc["root"] / run), "SELECT count(*) FROM docs"]) == 2
        err = capsys.readouterr().err
        assert name in err and len(err.strip().splitlines()) == 1, err


def test_response_size_cap(svc):
    r = query(svc, {"sql": "SELECT repeat('x', 2000000) AS big"})
    assert r.status_code == 422 and "cap" in r.json()["detail"], r.text


def test_cli_query_time_limit(svc, capsys):
    t = time.perf_counter()
    assert cli.main(["query", str(svc["run"]), "SELECT count(*) FROM range(100000000) a, range(1000000) b",
                     "--timeout-s", "1"]) == 2
    assert "time limit of 1 s" in capsys.readouterr().err
    assert time.perf_counter() - t < 30


FUZZ = [None, "", "x", 0, -1, 1.5, True, [], {}, ["json"], {"a": 1}, "\x00", "é" * 50, 10 ** 30, "SELECT 1",
        "../../etc", "team-a/one"]


def test_no_route_answers_500_to_fuzzed_input(svc):
    rng = random.Random(22)
    keys = ["sql", "format", "max_rows", "kind", "run", "config", "args"]
    with httpx.Client() as client:
        for method, path, _, _ in ROUTES:
            for _ in range(12):
                body = {k: rng.choice(FUZZ) for k in rng.sample(keys, rng.randint(0, len(keys)))}
                kw = {"json": body} if rng.random() < 0.8 else {"content": rng.choice([b"{", b"[]", b"\xff\xfe", b"1"])}
                r = client.request(method, svc["url"] + path, timeout=60, **kw,
                                   headers={"Authorization": f"Bearer {svc['tok']}", "Content-Type": "application/json"})
                assert r.status_code != 500 and r.status_code < 600, (method, path, body, r.text)


def test_audit_log_is_private_and_token_names_are_required(svc, capsys):
    assert stat.S_IMODE(os.stat(svc["tmp"] / "audit.jsonl").st_mode) == 0o600
    for name in ("", " ", "a b"):
        assert cli.main(["serve", "--root", str(svc["root"]), "token", "add", name]) == 2
        assert "without spaces" in capsys.readouterr().err


def _client_logged(root, tmp, extra: list[str]) -> str:
    port, log = free_port(), tmp / f"audit{len(extra)}.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "curate.pipeline.cli", "serve", "--root", str(root), "--port",
                             str(port), "--audit-log", str(log), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(120):
            try:
                httpx.get(f"http://127.0.0.1:{port}/api/runs", headers={"X-Forwarded-For": "203.0.113.9"}, timeout=5)
                break
            except httpx.TransportError:
                time.sleep(0.25)
    finally:
        proc.terminate()
        proc.wait(30)
    return json.loads(log.read_text().splitlines()[-1])["client"]


def test_forwarded_for_is_trusted_only_from_named_proxies(svc):
    assert _client_logged(svc["root"], svc["tmp"], []) == "127.0.0.1"
    assert _client_logged(svc["root"], svc["tmp"], ["--forwarded-allow-ips", "127.0.0.1"]) == "203.0.113.9"


def test_an_unexpected_error_is_one_500_and_the_connection_stays_usable(tmp_path):
    import socket
    import threading

    import uvicorn
    from fastapi import FastAPI

    from curate.pipeline.serve.middleware import Audit, audited

    app = FastAPI()
    app.middleware("http")(audited(Audit(tmp_path / "audit.jsonl")))

    @app.get("/bug")
    def bug():
        raise RuntimeError("a bug")

    @app.get("/fine")
    def fine():
        return {"ok": True}

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        # One socket, two requests: uvicorn drops a connection whose app raised, so the second
        # request would get no answer without the middleware's catch-all.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            status = []
            pending = b""
            for path in ("/bug", "/fine"):
                conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
                while b"\r\n\r\n" not in pending:
                    chunk = conn.recv(65536)
                    assert chunk, f"the connection was dropped before {path} was answered"
                    pending += chunk
                head, pending = pending.split(b"\r\n\r\n", 1)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))
                while len(pending) < length:
                    pending += conn.recv(65536)
                pending = pending[length:]
                status.append(head.split(b" ", 2)[1])
        assert status == [b"500", b"200"]
        assert [json.loads(line)["status"] for line in (tmp_path / "audit.jsonl").read_text().splitlines()] == [500, 200]
    finally:
        server.should_exit = True
        thread.join(30)
