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
    # Every 30 s of work a line (at 40 s and 80 s), then a closing one.
    assert lines[0] == "heuristics: 2/4 shards, 2,000 docs, 4.0 MB, 0.1 MB/s, ETA 0:00:40"
    assert lines[-1] == "heuristics: 4/4 shards, 4,000 docs, 8.0 MB, 0.1 MB/s"
    assert len(lines) == 3


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
