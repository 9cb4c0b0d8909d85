"""`url_filter` and `sample` on real text (pydoc topics), `curate run --limit`, and the shipped
breadth config end to end on Ray with its `curate stats` lines."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from curate.pipeline.running.config import load_config
from curate.pipeline.errors import ConfigError
from curate.stages.base import GlobalContext, LocalExecutor
from curate.stages.filter.url_filter import URLFilterConfig, URLFilterStage

REPO = Path(__file__).resolve().parents[1]


def _topics() -> list[tuple[str, str]]:
    import pydoc_data.topics as t

    return sorted(t.topics.items())


def _table(urls: list[str | None]) -> pa.Table:
    topics = _topics()[: len(urls)]
    return pa.table({"id": [n for n, _ in topics], "text": [t for _, t in topics], "source": ["pydoc"] * len(urls),
                     "url": pa.array(urls, pa.string()), "n_chars": [len(t) for _, t in topics]})


@pytest.fixture(scope="module")
def datatrove_url_stage() -> URLFilterStage:
    stage = URLFilterStage(URLFilterConfig(block_domains=["blocked.example"], block_patterns=[r"/private/"],
                                           allow_domains=["trusted.example"]))
    stage.setup()
    return stage


def test_url_filter_reason_per_list(datatrove_url_stage):
    stage = datatrove_url_stage
    listed = sorted(stage._dt.block_listed_domains)[0]  # whatever datatrove ships, its first entry
    banned = sorted(stage._dt.banned_words)[0]
    urls = ["https://docs.python.org/3/reference/a.html", f"http://{listed}/page", f"http://www.{listed}/page",
            "https://a.blocked.example/x", "https://ok.example/private/1", f"https://shop.example/{banned}/x",
            f"https://trusted.example/private/{banned}", None, ""]
    out = stage.process(_table(urls))
    reasons = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    ids = [n for n, _ in _topics()[: len(urls)]]
    assert reasons == {ids[1]: "url:domain", ids[2]: "url:domain", ids[3]: "url:block_domains",
                       ids[4]: "url:block_patterns", ids[5]: "url:hard_blacklisted"}
    assert out.kept.num_rows + out.rejected.num_rows == len(urls)
    assert out.counters == {"url_checked": 7, "no_url": 2, "allowed": 1}


def test_url_filter_without_datatrove_lists_and_without_url_column():
    stage = URLFilterStage(URLFilterConfig(datatrove_lists=False, block_domains=["python.org"]))
    out = stage.process(_table(["https://docs.python.org/3/x", "https://example.org/python.org"]))
    assert out.rejected.column("reason").to_pylist() == ["url:block_domains"]
    no_url = _table([None, None]).drop(["url"])
    assert stage.process(no_url).kept.num_rows == 2


@pytest.mark.parametrize("fields, field", [
    ({"block_patterns": ["(unclosed"]}, "stages[0].block_patterns"),
    ({"block_domains": ["https://x.org/"]}, "stages[0].block_domains"),
    ({"blok_domains": ["x.org"]}, "stages[0].blok_domains"),
])
def test_url_filter_config_errors(fields, field):
    with pytest.raises(ConfigError) as e:
        load_config(data={"name": "x", "out": "r", "inputs": [{"path": "x"}], "stages": [{"kind": "url_filter", **fields}]})
    assert e.value.field == field


# ------------------------------------------------------------------------------------- sample
def _paragraphs() -> list[tuple[str, str]]:
    """(id, paragraph) of every pydoc topic: over a thousand documents."""
    return [(f"{n}#{k}", p) for n, t in _topics() for k, p in enumerate(t.split("\n\n")) if p.strip()]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> list[Path]:
    """pydoc topic paragraphs as ingest shards of 250 documents, two sources."""
    from curate.stages.inputs import ingest

    root = tmp_path_factory.mktemp("sample")
    corpus = root / "topics.jsonl"
    corpus.write_text("".join(json.dumps({"id": n, "text": t, "source": "a" if k % 3 else "b"}) + "\n"
                              for k, (n, t) in enumerate(_paragraphs())))
    cfg = ingest.IngestConfig(shard_docs=250)
    task = ingest.plan_tasks([ingest.InputSpec(str(corpus))], cfg)[0]
    marker = ingest.run_ingest(ingest.IngestJob(task, cfg, str(root / "ingest"), str(root / "q"), "fp", "h"))
    return [root / "ingest" / o for o in marker["outputs"]]


def _sample(parts: list[Path], out: Path, **cfg) -> tuple[list[str], list[dict]]:
    from curate.stages import docshard
    from curate.stages.filter.sample import SampleConfig, SampleStage

    stage = SampleStage(SampleConfig(**cfg))
    ctx = GlobalContext(out / "sample", out / "work", out / "rejected", LocalExecutor(), json.dumps(cfg))
    stage.run(parts, ctx)
    kept = [i for p in parts for i in docshard.read_docs(out / "sample" / p.name, ["id"]).column("id").to_pylist()]
    markers = [json.loads((out / "sample" / "_done" / f"{p.stem}.json").read_text()) for p in parts]
    return kept, markers


def test_sample_fraction_is_deterministic_and_nested(ingested, tmp_path):
    n = len(_paragraphs())
    assert n > 1000 and len(ingested) > 1
    small, markers = _sample(ingested, tmp_path / "a", fraction=0.2)
    again, _ = _sample(ingested, tmp_path / "b", fraction=0.2)
    large, _ = _sample(ingested, tmp_path / "c", fraction=0.5)
    other, _ = _sample(ingested, tmp_path / "d", fraction=0.2, seed=1)
    assert small == again and set(small) < set(large) and set(other) != set(small)
    assert 0.15 * n < len(small) < 0.25 * n  # a binomial(n, 0.2) draw: both bounds are > 4 sd away
    assert all(m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"] for m in markers)
    assert sum(m["counts"]["rejected_by_reason"].get("sampled_out", 0) for m in markers) == n - len(small)


def test_sample_max_docs_per_group(ingested, tmp_path):
    kept, markers = _sample(ingested, tmp_path / "a", max_docs=40, by="source")
    by_source = {"a": 0, "b": 0}
    kept_set = set(kept)
    for k, (name, _) in enumerate(_paragraphs()):
        if name in kept_set:
            by_source["a" if k % 3 else "b"] += 1
    assert by_source == {"a": 40, "b": 40}
    # the 40 smallest draws of a group pass any fraction that keeps more than 40 of it
    both, _ = _sample(ingested, tmp_path / "b", max_docs=40, by="source", fraction=0.5)
    assert set(both) == set(kept)
    few, _ = _sample(ingested, tmp_path / "c", max_docs=40, by="source", fraction=0.02)
    assert set(few) < set(kept)
    # a rerun reuses every shard (markers untouched)
    stamps = [(tmp_path / "a" / "sample" / "_done" / f"{p.stem}.json").stat().st_mtime_ns for p in ingested]
    _sample(ingested, tmp_path / "a", max_docs=40, by="source")
    assert stamps == [(tmp_path / "a" / "sample" / "_done" / f"{p.stem}.json").stat().st_mtime_ns for p in ingested]
    # a damaged shard is rebuilt, and the result is the same
    (tmp_path / "a" / "rejected" / ingested[0].name).write_bytes(b"garbage")
    again, _ = _sample(ingested, tmp_path / "a", max_docs=40, by="source")
    assert again == kept


def test_sample_config_errors():
    base = {"name": "x", "out": "r", "inputs": [{"path": "x"}]}
    for fields, field in [({}, "stages[0].fraction"), ({"fraction": 1.5}, "stages[0].fraction"),
                          ({"max_docs": 0}, "stages[0].max_docs"), ({"max_docs": 3, "by": "text"}, "stages[0].by")]:
        with pytest.raises(ConfigError) as e:
            load_config(data={**base, "stages": [{"kind": "sample", **fields}]})
        assert e.value.field == field


# ------------------------------------------------------------------------ the shipped config
def test_breadth_config_end_to_end(ray_session, tmp_path):
    """configs/breadth.yaml with its eval set taken from the corpus, `--limit`, stats lines."""
    from curate.pipeline.commands import core as cmd_core
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.reporting.stats import summary_lines

    paras = _paragraphs()
    corpus = [tmp_path / "one.jsonl", tmp_path / "two.jsonl"]
    for k, path in enumerate(corpus):  # two inputs, each longer than the limit
        path.write_text("".join(json.dumps({"id": n, "text": t, "source": path.stem,
                                            "url": f"https://docs.python.org/3/reference/{n}.html"}) + "\n"
                                for n, t in paras[k::2]))
    evals = tmp_path / "evalsets"
    evals.mkdir()
    quoted = [t for _, t in paras[:300] if len(t.split()) > 60][:5]  # in the first records of input one
    (evals / "held_out.jsonl").write_text("".join(json.dumps({"question": " ".join(t.split()[10:50])}) + "\n"
                                                  for t in quoted))
    cfg = (REPO / "configs" / "breadth.yaml").read_text().replace("data/evalsets", str(evals))
    cfg = cfg.replace("datatrove_lists: true", "datatrove_lists: false")  # ~0.8 GB per worker: tested above
    path = tmp_path / "breadth.yaml"
    path.write_text(cfg)
    run_dir = cmd_core.run(str(path), inputs=[str(p) for p in corpus], out=str(tmp_path / "run"),
                           workers=2, limit=300)
    con = connect(run_dir, text=False)
    assert con.execute("SELECT sum(docs_in) FROM shards WHERE stage = 'ingest'").fetchone()[0] == 600
    flagged = con.execute("SELECT count(*) FROM docs WHERE len(contaminated_sets) > 0").fetchone()[0]
    assert flagged >= 1
    lines = "\n".join(summary_lines(run_dir))
    assert "decontamination (decontaminate" in lines and "url filter (url_filter)" in lines
    assert "sample (sample)" in lines and "pii (pii): replaced" in lines


# ---------------------------------------------------------------------------------------- pii
def _stdlib_texts() -> list[tuple[str, str]]:
    """The standard library's top-level modules: real e-mail addresses (authors) and IPs."""
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    return [(p.name, p.read_text(encoding="utf-8", errors="replace")) for p in sorted(root.glob("*.py"))]


def test_pii_matches_datatrove_and_counts_per_kind():
    from datatrove.pipeline.formatters.pii import PIIFormatter

    from curate.stages.filter.pii import PIIConfig, Redactor

    texts = [t for _, t in _stdlib_texts()]
    ours, theirs = Redactor(PIIConfig(credit_cards=False)), PIIFormatter()
    emails = theirs.emails_replacer.regex
    total = {"email": 0, "ip": 0}
    for t in texts:
        new, counts = ours.redact(t)
        assert new == theirs.format(t)  # datatrove's formatter is the reference, replacements included
        assert counts.get("email", 0) == len(emails.findall(t))
        for k in total:
            total[k] += counts.get(k, 0)
    assert total["email"] > 0 and total["ip"] > 0
    card, _ = Redactor(PIIConfig(patterns={"ticket": r"\bTICKET-\d+\b"})).redact(
        "pay 4111 1111 1111 1111, not 4111 1111 1111 1112; see TICKET-42")
    assert card == "pay <CREDIT_CARD>, not 4111 1111 1111 1112; see <TICKET>"


def test_pii_then_a_delta_stage_catalog_and_resume(ray_session, tmp_path):
    """pii writes a new text base; the next stage's delta shards point at it; reruns reuse both
    and a changed pii config reruns both."""
    from datatrove.pipeline.formatters.pii import PIIFormatter

    from curate.pipeline.catalog.db import connect
    from curate.pipeline.running.runner import run_pipeline
    from curate.pipeline.reporting.stats import summary_lines
    from curate.stages import docshard

    corpus = tmp_path / "stdlib.jsonl"
    corpus.write_text("".join(json.dumps({"id": n, "text": t, "source": "stdlib", "url": f"https://x.org/{n}"}) + "\n"
                              for n, t in _stdlib_texts()))
    stages = [{"kind": "pii"}, {"kind": "url_filter", "datatrove_lists": False, "block_domains": ["y.org"]}]
    data = {"name": "p", "out": str(tmp_path / "run"), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 60},
            "stages": stages}
    first = run_pipeline(load_config(data=data), workers=2, quiet=True)
    run = tmp_path / "run"
    emails = PIIFormatter().emails_replacer.regex
    fake = {"email@example.com", "firstname.lastname@example.org"}

    def texts(view: str) -> dict[str, str]:
        return dict(connect(run).execute(f"SELECT id, text FROM {view}").fetchall())

    original, redacted = texts("ingest"), texts("docs")
    assert set(original) == set(redacted)
    assert any(emails.search(t) for t in original.values())
    assert all(set(emails.findall(t)) <= fake for t in redacted.values())
    con = connect(run, text=False)
    n_chars = dict(con.execute("SELECT id, n_chars FROM docs").fetchall())
    assert all(n_chars[i] == len(t) for i, t in redacted.items())
    assert con.execute("SELECT sum(pii_replaced) FROM docs").fetchone()[0] > 0
    for shard in sorted((run / "url_filter").glob("*.parquet")):
        assert docshard.is_delta(shard) and docshard.base_ref(shard).path.parent.name == "pii"
        pii_text = docshard.read_docs(run / "pii" / shard.name, ["text"]).column("text").to_pylist()
        assert docshard.read_docs(shard, ["text"]).column("text").to_pylist() == pii_text
    assert "pii (pii): replaced" in "\n".join(summary_lines(run))

    again = run_pipeline(load_config(data=data), workers=2, quiet=True)
    assert [r.skipped for r in again] == [r.shards for r in again] and texts("docs") == redacted
    data["stages"] = [{"kind": "pii", "emails": False}] + stages[1:]
    changed = run_pipeline(load_config(data=data), workers=2, quiet=True)
    assert [r.skipped for r in changed[1:]] == [0, 0] and first[1].shards > 0
    assert texts("docs") != redacted and any(emails.search(t) for t in texts("docs").values())


def test_limit_reads_the_first_records_of_each_input(tmp_path):
    """Without Ray: a JSONL file that would be split is read as one task up to the limit, and a
    folder of text files gives its first N files."""
    import json as json_pkg

    from curate.stages.inputs import ingest

    paras = _paragraphs()
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json_pkg.dumps({"id": n, "text": t}) + "\n" for n, t in paras))
    folder = tmp_path / "texts"  # a folder of text files, one document each
    folder.mkdir()
    for k, (_, t) in enumerate(paras[:12]):
        (folder / f"{k:02d}.txt").write_text(t)
    cfg = ingest.IngestConfig(split_mb=0.05, limit=7)
    tasks = ingest.plan_tasks([ingest.InputSpec(str(big)), ingest.InputSpec(str(folder), format="text")], cfg)
    assert len(ingest.plan_tasks([ingest.InputSpec(str(big))], ingest.IngestConfig(split_mb=0.05))) > 1
    assert len(tasks) == 2 and len(tasks[1].read.files) == 7
    ids = []
    for t in tasks:
        m = ingest.run_ingest(ingest.IngestJob(t, cfg, str(tmp_path / "ingest"), str(tmp_path / "q"), "fp", "h"))
        ids += [i for o in m["outputs"] for i in pa.parquet.read_table(tmp_path / "ingest" / o)["id"].to_pylist()]
    assert ids[:7] == [n for n, _ in paras[:7]] and len(ids) == 14
    with pytest.raises(ConfigError) as e:
        load_config(data={"name": "x", "out": "r", "inputs": [{"path": "x"}], "ingest": {"limit": 0}})
    assert e.value.field == "ingest.limit"


def test_sample_of_an_earlier_version_is_redone_whole_and_draws_with_the_holdout_hash(ingested, tmp_path,
                                                                                        monkeypatch):
    """The sample stage's draw is stages/idhash.py's salted hash (holdout's, with the sample's own
    salt); its version is in every shard's fingerprint, so shards of an earlier version are redone."""
    import numpy as np

    from curate.stages import idhash


    from curate.stages.filter import sample
    ids = [n for n, _ in _paragraphs()[:50]]
    u = sample.draw(ids, 3)
    assert np.array_equal(u, idhash.unit_draw(ids, "curate-sample:3:")) and ((0 <= u) & (u < 1)).all()
    assert not np.array_equal(idhash.salted_keys(ids, "curate-sample:0:"), idhash.salted_keys(ids, "curate-eval:"))
    monkeypatch.setattr(sample, "SAMPLE_VERSION", sample.SAMPLE_VERSION - 1)
    _sample(ingested, tmp_path / "a", fraction=0.2)
    done = [tmp_path / "a" / "sample" / "_done" / f"{p.stem}.json" for p in ingested]
    stamps = [p.stat().st_mtime_ns for p in done]
    monkeypatch.undo()
    now, _ = _sample(ingested, tmp_path / "a", fraction=0.2)
    assert all(p.stat().st_mtime_ns != s for p, s in zip(done, stamps))
    assert now == _sample(ingested, tmp_path / "b", fraction=0.2)[0]
