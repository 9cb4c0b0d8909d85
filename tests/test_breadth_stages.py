"""`url_filter` and `sample` on real text (pydoc topics), `curate run --limit`, and the shipped
breadth config end to end on Ray with its `curate stats` lines."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from pipeline.config import load_config
from pipeline.errors import ConfigError
from stages.base import GlobalContext, LocalExecutor
from stages.url_filter import URLFilterConfig, URLFilterStage

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
    from stages import ingest

    root = tmp_path_factory.mktemp("sample")
    corpus = root / "topics.jsonl"
    corpus.write_text("".join(json.dumps({"id": n, "text": t, "source": "a" if k % 3 else "b"}) + "\n"
                              for k, (n, t) in enumerate(_paragraphs())))
    cfg = ingest.IngestConfig(shard_docs=250)
    task = ingest.plan_tasks([ingest.InputSpec(str(corpus))], cfg)[0]
    marker = ingest.run_ingest(ingest.IngestJob(task, cfg, str(root / "ingest"), str(root / "q"), "fp", "h"))
    return [root / "ingest" / o for o in marker["outputs"]]


def _sample(parts: list[Path], out: Path, **cfg) -> tuple[list[str], list[dict]]:
    from stages import docshard
    from stages.sample import SampleConfig, SampleStage

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
    from pipeline import cmd_core
    from pipeline.catalog import connect
    from pipeline.stats import summary_lines

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
    assert "sample (sample)" in lines
