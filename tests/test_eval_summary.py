"""`curate eval`'s table: a held-out set with no documents says so instead of printing `nan`."""

from __future__ import annotations

from curate.pipeline.commands.evaluation import summary


def test_an_empty_held_out_set_prints_no_nan_row():
    result = {"sets": {"code": {"docs": 5, "bpb": 3.0198, "loss": 6.9644},
                       "web": {"docs": 0, "bpb": None, "loss": None}},
              "qa": {}}
    lines = summary(result).splitlines()
    assert "nan" not in summary(result)
    code, web = (next(line for line in lines if line.startswith(name)) for name in ("code", "web"))
    assert code.split()[1:] == ["5", "3.0198", "6.9644"]
    assert web.split()[1:4] == ["0", "-", "-"] and "no documents held out" in web
