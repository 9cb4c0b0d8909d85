"""Long stages report progress in logs (stderr not a terminal) as periodic plain lines; a
terminal keeps its tqdm bars."""

from __future__ import annotations

import io

from curate.pipeline.running.progress import LogProgress, progress


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_log_lines_show_shards_docs_rate_and_eta():
    out, clock = io.StringIO(), _Clock()
    with LogProgress(4, "heuristics", every_s=30, file=out, clock=clock) as p:
        for k in range(4):
            clock.t += 20
            p.result({"counts": {"in": 1000}, "bytes_in": 5})  # a marker's bytes_in is not the input read
            p.update(1, 2_000_000)
    lines = out.getvalue().splitlines()
    # Every 30 s of work a line (at 40 s and 80 s); the closing one is not repeated.
    assert lines[0] == "heuristics: 2/4 shards, 2,000 docs, 4.0 MB, 0.1 MB/s, ETA 0:00:40"
    assert lines[-1] == "heuristics: 4/4 shards, 4,000 docs, 8.0 MB, 0.1 MB/s"
    assert len(lines) == 2


def test_terminal_keeps_bars_and_logs_get_lines(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("CURATE_PROGRESS_S", raising=False)

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert isinstance(progress(10, "dedup", file=io.StringIO()), LogProgress)
    assert not isinstance(progress(10, "dedup", file=Tty()), LogProgress)
    assert not isinstance(progress(0, "dedup", file=io.StringIO()), LogProgress)  # nothing to show
    monkeypatch.setenv("CURATE_PROGRESS_S", "0")
    assert not isinstance(progress(10, "dedup", file=io.StringIO()), LogProgress)


def _tiny_config(tmp_path):
    import json as _json
    import pydoc_data.topics as topics

    src = tmp_path / "in.jsonl"
    src.write_text("".join(_json.dumps({"id": k, "text": v}) + "\n" for k, v in sorted(topics.topics.items())
                           if len(v) > 400))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"name: p\ninputs: [{{path: {src}}}]\ningest: {{shard_docs: 10}}\nstages: [{{kind: exact_dedup}}]\n")
    return cfg


def _curate(*args, env=None):
    import os
    import subprocess
    import sys

    env = {**{k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "RAY_ADDRESS")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "curate.pipeline.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


def test_log_json_quiet_and_no_carriage_returns(tmp_path):
    import json as _json

    cfg = _tiny_config(tmp_path)
    done = _curate("--log-json", "run", str(cfg), "--out", str(tmp_path / "a"), env={"CURATE_PROGRESS_S": "0.000001"})
    assert done.returncode == 0, done.stderr
    records = [_json.loads(x) for x in done.stderr.splitlines()]  # every line one JSON record
    assert "\r" not in done.stderr
    assert {"time", "level", "logger", "message"} <= set(records[0])
    chose = [r for r in records if r["message"].startswith("executor: local (")]
    assert len(chose) == 1 and chose[0]["level"] == "INFO"
    shown = [r["message"] for r in records if r["logger"] == "curate.progress"]
    # Progress counts the input read: ingest's input file, then the documents exact_dedup read.
    assert any(m.startswith("ingest: ") and " MB, " in m for m in shown)
    assert any(m.startswith("exact_dedup: ") and " MB, " in m for m in shown)
    assert len(shown) == len(set(shown))  # a closing line only when the last one was not it
    assert "exact_dedup:" in done.stdout  # the stage lines are the command's output, on stdout
    quiet = _curate("--quiet", "run", str(cfg), "--out", str(tmp_path / "b"), env={"CURATE_PROGRESS_S": "0.000001"})
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert "exact_dedup:" not in quiet.stdout.split("\n\n")[0]
    bad = _curate("--log-json", "run", str(tmp_path / "missing.yaml"))
    assert bad.returncode == 2 and _json.loads(bad.stderr.splitlines()[-1])["level"] == "ERROR"


def test_training_progress_in_a_log_is_lines_not_a_bar(caplog, monkeypatch):
    import logging

    from curate.training.metrics import Progress

    monkeypatch.setenv("CURATE_PROGRESS_S", "0.000001")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    with caplog.at_level(logging.INFO, logger="curate.train"):
        p = Progress(total=3, initial=0, enabled=True)  # stderr is captured here: not a terminal
        for loss in (3.5, 3.25, 3.0):
            p.update({"loss": loss})
        p.close()
    assert p.bar is None
    assert [r.getMessage() for r in caplog.records] == [f"train: step {k}/3, loss {v:.4g}" for k, v in
                                                        ((1, 3.5), (2, 3.25), (3, 3.0))]
