"""`curate stats` tables line up whatever their cells hold, show only the annotations a run has,
and `curate query` on a view that does not exist names the views that do."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from curate.pipeline.commands.core import stats_text
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline

LONG_STAGE = "heuristics_for_english_prose_only"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, system_corpus, ray_session):
    """Heuristics (datatrove's reasons are long: `gopher_quality:gopher_below_alpha_threshold`)
    under a long stage name, then rule-based domains: annotations, but no quality stage."""
    out = tmp_path_factory.mktemp("stats") / "run"
    run_pipeline(load_config(data={
        "name": "st", "out": str(out), "inputs": [{"path": str(system_corpus)}], "ingest": {"max_chars": 50_000},
        "stages": [{"kind": "heuristics", "name": LONG_STAGE, "filters": [{"filter": "gopher_quality"}],
                    "exempt_sources": ["python-stdlib"]},  # so documents remain whatever the rules drop
                   {"kind": "domain", "mode": "rules", "default": "web"}]}), quiet=True)
    return out


def _section(text: str, title: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(title) + 1
    body = []
    for line in lines[start:]:
        if not line.startswith("  "):
            break
        body.append(line)
    return body


def _number_ends(line: str) -> list[int]:
    return [m.end() for m in re.finditer(r"\d[\d,.]*s?(?=\s|$)", line)]


@pytest.mark.parametrize("title", ["stages:", "per source:", "dropped (rejected) per reason:", "quarantined per reason:"])
def test_columns_line_up_with_long_names(run_dir, title):
    text = stats_text(str(run_dir))
    rows = _section(text, title)
    assert rows, text
    if title == "dropped (rejected) per reason:":
        assert any(LONG_STAGE in r and len(r.split()[1]) > 32 for r in rows), rows  # the long names are there
    # Every number ends in the same column on every row of the table, and cells never touch.
    assert len({tuple(_number_ends(r)) for r in rows}) == 1, "\n".join(rows)
    assert all("  " in r.strip() for r in rows)


def test_no_bucket_without_a_quality_stage(run_dir):
    text = stats_text(str(run_dir))
    cells = _section(text, "annotations (share of characters):")
    assert any(line.strip().startswith("domain") for line in cells)
    joint = [line for line in cells if line.startswith("    ")]
    assert joint and "bucket" not in text and "None" not in "\n".join(joint)
    assert "joint counts (domain)" in text


def test_query_on_an_unknown_view_lists_the_views(run_dir):
    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "query", str(run_dir), "SELECT * FROM doc"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    listed = r.stderr.split("views:")[-1]
    for view in ("docs", "ingest", LONG_STAGE, "domain", "rejected", "quarantine", "shards"):
        assert view in listed, r.stderr


def test_stats_json_holds_the_same_figures(run_dir):
    """`curate stats --json`: one object whose figures are the catalog's, and the text's."""
    import json

    from curate.pipeline.catalog.db import query

    r = subprocess.run([sys.executable, "-m", "curate.pipeline.cli", "stats", str(run_dir), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    one = lambda sql: query(run_dir, sql).to_pylist()  # noqa: E731
    assert got["documents"] == one("SELECT count(*) AS n FROM docs")[0]["n"] > 0
    assert got["characters"] == one("SELECT sum(n_chars) AS c FROM docs")[0]["c"]
    assert {(s["source"], s["docs"], s["chars"]) for s in got["per_source"]} == {
        (x["source"], x["n"], x["c"])
        for x in one("SELECT source, count(*) AS n, sum(n_chars) AS c FROM docs GROUP BY 1")}
    assert {(d["stage"], d["reason"], d["docs"]) for d in got["dropped"]} == {
        (x["stage"], x["reason"], x["n"])
        for x in one("SELECT stage, reason, count(*) AS n FROM rejected GROUP BY ALL")}
    assert got["dropped"] and [s["stage"] for s in got["stages"]] == ["ingest", LONG_STAGE, "domain"]
    t = got["retention"]["total"]
    assert (t["docs_in"], t["docs_kept"]) == (got["stages"][0]["kept"], got["documents"])
    # The text shows the same numbers.
    text = stats_text(str(run_dir))
    assert f"documents: {got['documents']:,}   characters: {got['characters']:,}" in text
    annotations = got["sections"]["curate.pipeline.reporting.annotate_summary:annotate_summary"]
    assert any(line.startswith("  domain") for line in annotations)


def test_stats_json_names_what_a_losing_source_lost(tmp_path):
    """A source that loses most of its text is both a retention row and a warning: its reasons
    are named fields in each."""
    import json

    from curate.pipeline.reporting.stats import summary

    words = " ".join(sorted(__doc__.split()))
    docs = [{"id": f"a{i}", "text": f"{words} {i}", "source": "long"} for i in range(5)]
    docs += [{"id": f"b{i}", "text": f"tiny {i}", "source": "short"} for i in range(5)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    run_pipeline(load_config(data={"name": "l", "out": str(tmp_path / "run"),
                                   "inputs": [{"path": str(tmp_path / "in.jsonl")}],
                                   "stages": [{"kind": "word_count", "min_words": 5}]}), quiet=True, executor="local")
    ret = json.loads(json.dumps(summary(tmp_path / "run")))["retention"]
    want = [{"reason": "word_count/words_below_min", "docs": 5, "chars": sum(len(d["text"]) for d in docs[5:])}]
    assert [r["source"] for r in ret["losing"]] == ["short"] and ret["losing"][0]["reasons"] == want
    assert {r["source"]: r["reasons"] for r in ret["rows"]} == {"long": [], "short": want}
