"""`curate stats` and the report show what each source and domain lost: documents and characters
in vs kept, top reasons, the rest of the sources folded into `other`, the overall kept share and a
warning for sources that lose most of their text."""

from __future__ import annotations

import pytest

from curate.pipeline.catalog.db import connect, read_stage_names
from curate.pipeline.running.config import load_config
from curate.pipeline.reporting.report import write_report
from curate.pipeline.running.runner import run_pipeline
from curate.pipeline.reporting.stats import retention, summary_lines

KEYS = ("docs_in", "chars_in", "docs_kept", "chars_kept")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, system_corpus):
    """Domains tagged first, then Gopher quality with no exemption: prose-made rules drop much of
    the code and reference text, so some source loses most of its characters."""
    out = tmp_path_factory.mktemp("retention") / "run"
    run_pipeline(load_config(data={
        "name": "ret", "out": str(out), "inputs": [{"path": str(system_corpus)}], "ingest": {"max_chars": 50_000},
        "stages": [{"kind": "domain", "mode": "rules", "default": "web"},
                   {"kind": "heuristics", "filters": [{"filter": "gopher_quality"}]}]}),
        quiet=True, executor="local")
    return out


@pytest.fixture(scope="module")
def ret(run_dir):
    con = connect(run_dir, text=False)
    try:
        full = retention(con, read_stage_names(run_dir), top=1000)
        folded = retention(con, read_stage_names(run_dir), top=1)
        truth = {"in": dict((s, (n, c)) for s, n, c in con.execute(
                     "SELECT source, count(*), sum(n_chars) FROM ingest GROUP BY 1").fetchall()),
                 "kept": dict((s, (n, c)) for s, n, c in con.execute(
                     "SELECT source, count(*), sum(n_chars) FROM docs GROUP BY 1").fetchall()),
                 "rejected": dict((s, n) for s, n in con.execute(
                     "SELECT source, count(*) FROM rejected GROUP BY 1").fetchall())}
    finally:
        con.close()
    return full, folded, truth


def test_per_source_in_vs_kept_is_conserved(ret):
    full, _, truth = ret
    assert {r["source"] for r in full["rows"]} == set(truth["in"])
    for r in full["rows"]:
        s = r["source"]
        assert (r["docs_in"], r["chars_in"]) == truth["in"][s]
        assert (r["docs_kept"], r["chars_kept"]) == truth["kept"].get(s, (0, 0))
        # No dedup here: every document that entered was kept or rejected, with a reason.
        assert r["docs_in"] == r["docs_kept"] + truth["rejected"].get(s, 0)
        assert sum(n for _, n, _ in r["reasons"]) == truth["rejected"].get(s, 0)
        assert all(name.startswith("heuristics/gopher_quality:") for name, _, _ in r["reasons"])
    assert full["total"]["chars_in"] == sum(c for _, c in truth["in"].values())


def test_top_n_plus_other(ret):
    full, folded, _ = ret
    assert len(full["rows"]) >= 3
    assert len(folded["rows"]) == 2 and folded["rows"][0] == full["rows"][0]
    other = folded["rows"][1]
    assert other["source"] == f"other ({len(full['rows']) - 1} sources)"
    for k in KEYS:
        assert other[k] == sum(r[k] for r in full["rows"][1:])
    assert folded["total"] == full["total"]


def test_warns_for_sources_losing_most_text(ret, run_dir):
    full, _, _ = ret
    losing = {r["source"] for r in full["rows"] if r["chars_kept"] < 0.5 * r["chars_in"]}
    assert losing, "Gopher's prose rules drop most of some source of this corpus"
    assert {r["source"] for r in full["losing"]} == losing
    text = "\n".join(summary_lines(run_dir))
    t = full["total"]
    assert f"{t['chars_kept']:,} of {t['chars_in']:,} characters" in text
    for s in losing:
        assert f"warning: source {s} kept" in text
    # Domains were tagged before filtering: per-domain in vs kept covers every ingested document.
    stage, rows = full["domains"]
    assert stage == "domain" and sum(r[1] for r in rows) == t["docs_in"]
    assert sum(r[3] for r in rows) == t["docs_kept"]
    assert "retention per domain (documents entering domain -> kept):" in text


def test_report_states_kept_share_and_warnings(ret, run_dir):
    full, _, _ = ret
    page = write_report(run_dir).read_text()
    assert "Text per source: in vs kept" in page
    t = full["total"]
    assert f"Kept {100 * t['chars_kept'] / t['chars_in']:.1f}% of the characters" in page
    assert page.count("Warning: source ") == len(full["losing"])
