"""The service's page in real headless Chromium (Debian's `chromium`): the runs list, the run's
stage table, a SQL result, the plan and the report, read from the DOM Chromium dumps, and a
screenshot that holds more than a blank page."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
from pathlib import Path

import pytest

from curate.pipeline.commands.core import report
from curate.pipeline.commands.plan import plan
from curate.pipeline.serve.app import ServeConfig
from test_serve import Server, build_run, make_tokens

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/setup.sh installs "
                                                          "it as root: apt-get install -y chromium)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1200,1400", "--virtual-time-budget=30000"]


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, system_corpus, ray_session):
    tmp = tmp_path_factory.mktemp("servepage")
    run = build_run(tmp / "runs" / "team-a" / "page", system_corpus)
    recipe = tmp / "recipe.yaml"
    recipe.write_text(json.dumps({"name": "t", "kind": "natural", "groups": [{"name": "all", "where": "TRUE"}]}))
    plan(run, recipe, tokens=None, seq_len=256, echo=None)
    report(str(run))
    tokens = make_tokens(tmp / "tokens.json")
    server = Server(ServeConfig(root=tmp / "runs", tokens=tmp / "tokens.json"))
    yield server, tokens, tmp
    server.close()


def chromium(url: str, *extra: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="curate-chromium-") as profile:
        return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=180)


def test_page_shows_the_run_its_stages_a_query_plan_and_report(page_server):
    server, tokens, tmp = page_server
    sql = "SELECT source, count(*) AS docs FROM docs GROUP BY ALL ORDER BY docs DESC"
    link = server.url + "/#" + urllib.parse.urlencode({"token": tokens["reader"], "run": "team-a/page", "sql": sql})
    dom = chromium(link, "--dump-dom")
    html = dom.stdout
    assert 'data-run="team-a/page"' in html, dom.stderr[-2000:]
    assert '<h2 id="run-name">team-a/page</h2>' in html
    for stage in ("ingest", "exact_dedup"):
        assert f'<tr data-stage="{stage}">' in html
    assert "<th>source</th><th>docs</th>" in html and 'data-rows="' in html
    assert '<div id="plan"><img src="blob:' in html and '<iframe src="blob:' in html
    assert tokens["reader"] not in html  # the token left the URL and stays in sessionStorage
    shot = tmp / "page.png"
    chromium(link, f"--screenshot={shot}")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a blank 1200x1400 page is a few kB


def test_page_without_a_token_asks_for_one(page_server):
    server, tokens, _ = page_server
    html = chromium(server.url + "/", "--dump-dom").stdout
    assert '<section id="login">' in html and '<main id="main" hidden="">' in html
    wrong = chromium(server.url + "/#token=curate_wrong", "--dump-dom").stdout
    assert "the token was refused" in wrong and "team-a" not in wrong
