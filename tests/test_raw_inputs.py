"""Raw inputs as users have them: HTML pages, WARC files, Hugging Face datasets (save_to_disk
folders, shard folders, the local cache), and inputs that yield nothing, which must fail loudly."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import rawpages
from badinput import fifo_with_writer, ingest_in_process
from curate.pipeline.catalog.db import query
from curate.pipeline.errors import CurateError
from curate.pipeline.running.config import load_config
from curate.pipeline.running.runner import run_pipeline
from curate.stages.inputs.ingest import IngestConfig, IngestJob, InputSpec, plan_tasks, run_ingest
from curate.stages.inputs.normalize import normalize_text


_ingest = ingest_in_process


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _write_pages(root: Path, n: int) -> dict[str, str]:
    """`n` topic pages under `root` (one gzip-compressed); {path: topic text}."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for i, (name, text) in enumerate(rawpages.topics(n)):
        raw = rawpages.page(name, text).encode()
        p = root / (f"{name}.html.gz" if i == 0 else f"{name}.html")
        p.write_bytes(gzip.compress(raw) if i == 0 else raw)
        out[str(p)] = text
    return out


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_html_pages_become_their_main_content(tmp_path, extractor):
    pages = _write_pages(tmp_path / "site", 12)
    docs, quarantined = _ingest([InputSpec(str(tmp_path / "site"), extractor=extractor)], tmp_path / "w")
    assert quarantined == [] and len(docs) == 12
    for d in docs:
        source_text = pages[d["url"]]  # url names the page's file
        assert d["input_path"] == d["url"] and d["source"] == "site"
        meta = json.loads(d["meta"])
        assert meta["lang"] == "en" and meta["title"].endswith("| Reference")
        assert not any(w in d["text"] for w in rawpages.BOILERPLATE), d["text"][:300]
        assert "<p>" not in d["text"] and "<pre" not in d["text"]
        # The topic's words are in the document, in about the same numbers.
        want, got = Counter(_words(source_text)), Counter(_words(d["text"]))
        assert sum((want & got).values()) >= 0.97 * sum(want.values()), (d["url"], sorted(want - got)[:10])
        assert sum(got.values()) <= 1.1 * sum(want.values()) + 40
        assert "first point of" in d["text"] and "reference topic" in d["text"]  # lists and tables kept
        if extractor == "trafilatura":  # its plain-text output may flatten a <pre> block's indentation
            continue
        # Code keeps its indentation: each indented code line of the topic is a line of the document.
        code = [ln for kind, b in rawpages.blocks(source_text) if kind == "code" for ln in b.split("\n")
                if ln.startswith("    ") and ln.strip()]
        text_lines = {normalize_text(ln)[0].rstrip() for ln in d["text"].split("\n")}
        assert all(normalize_text(ln)[0].rstrip() in text_lines for ln in code), d["url"]


def test_bad_pages_are_quarantined_with_their_reason(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    name, text = rawpages.topics(1)[0]
    (site / "good.html").write_text(rawpages.page(name, text))
    # Declared UTF-8, mostly bytes that are not: no document of mojibake.
    (site / "undecodable.html").write_bytes(b'<html><head><meta charset="utf-8"></head><body><p>'
                                            + bytes(range(0x80, 0x100)) * 40 + b"</p></body></html>")
    (site / "empty.html").write_text('<html><head><title>Nothing</title><script>var x = 1;</script></head>'
                                     '<body><nav><a href="/">Home</a></nav></body></html>')
    huge = b"<html><body>" + b"<p>" + b"word " * (11 * 1024 * 1024) + b"</p></body></html>"
    (site / "huge.html").write_bytes(huge)
    (site / "huge2.html.gz").write_bytes(gzip.compress(huge, 1))  # 55 MB unpacked from a small file
    (site / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300))
    (site / "notes.html").write_text(text)  # plain text named .html
    # A page with a few bad bytes is kept, and the replacements are counted.
    (site / "latin.html").write_bytes(rawpages.page(name, text).encode().replace(b"<h1>", b"<h1>caf\xe9 ", 1))
    cfg = IngestConfig(max_page_mb=50)
    docs, quarantined = _ingest([InputSpec(str(site))], tmp_path / "w", cfg)
    reasons = {Path(q["path"]).name: q["reason"] for q in quarantined}
    assert reasons == {"undecodable.html": "undecodable_bytes", "empty.html": "no_main_content",
                       "huge.html": "page_too_large", "huge2.html.gz": "page_too_large", "image.html": "binary_file",
                       "notes.html": "not_html"}
    assert sorted(Path(d["url"]).name for d in docs) == ["good.html", "latin.html"]
    assert "caf\ufffd" in next(d["text"] for d in docs if d["url"].endswith("latin.html"))


def test_warc_responses_become_the_same_documents_as_the_pages(tmp_path):
    pages = rawpages.topics(8)
    html_pages = {f"https://docs.example.org/{name}.html": rawpages.page(name, text).encode() for name, text in pages}
    recs = [(u, p, "text/html; charset=utf-8", 200) for u, p in html_pages.items()]
    # The charset comes from the HTTP header when the page names none.
    latin_url = "https://docs.example.org/latin.html"
    latin = rawpages.page("Latin", pages[0][1] + "\n\nCaf\u00e9 cr\u00e8me.", charset=None).encode("latin-1")
    recs += [(latin_url, latin, "text/html; charset=iso-8859-1", 200),
             ("https://docs.example.org/data.json", b'{"a": 1}', "application/json", 200),
             ("https://docs.example.org/gone", b"<html><body><p>Not found</p></body></html>", "text/html", 404)]
    # A page saved as a `resource` record (wget's --warc-file), without HTTP headers.
    from warcio.warcwriter import WARCWriter

    saved_url = "https://docs.example.org/saved.html"
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True)
    writer.write_record(writer.create_warc_record(saved_url, "resource", payload=io.BytesIO(html_pages[recs[0][0]]),
                                                  warc_content_type="text/html"))
    (tmp_path / "crawl.warc.gz").write_bytes(rawpages.warc(recs) + out.getvalue())
    site = tmp_path / "site"
    site.mkdir()
    for u, p in html_pages.items():
        (site / u.rsplit("/", 1)[1]).write_bytes(p)
    warc_docs, quarantined = _ingest([InputSpec(str(tmp_path / "crawl.warc.gz"))], tmp_path / "w")
    assert sorted(q["reason"] for q in quarantined) == ["http_status", "not_html_payload"]
    by_url = {d["url"]: d for d in warc_docs}
    assert set(by_url) == set(html_pages) | {latin_url, saved_url}
    assert by_url[saved_url]["text"] == by_url[recs[0][0]]["text"]
    assert all(d["date"].isoformat() == "2024-05-01T10:00:00+00:00" for d in warc_docs if d["url"] != saved_url)
    assert "Caf\u00e9 cr\u00e8me." in by_url[latin_url]["text"]
    html_docs, _ = _ingest([InputSpec(str(site), format="html")], tmp_path / "h")
    assert {Path(d["url"]).name: d["text"] for d in html_docs} == \
        {u.rsplit("/", 1)[1]: by_url[u]["text"] for u in html_pages}


def test_cut_and_damaged_warcs_are_counted_by_reason(tmp_path):
    name, text = rawpages.topics(1)[0]
    page = rawpages.page(name, text).encode()
    recs = [(f"https://x.example/{i}", page, "text/html", 200) for i in range(3)]
    gz, plain = rawpages.warc(recs), rawpages.warc(recs, gzip_records=False)
    (tmp_path / "cut-member.warc.gz").write_bytes(gz[:-200])  # the last gzip member is cut short
    (tmp_path / "cut-record.warc").write_bytes(plain[:-500])  # the file ends inside the last record
    (tmp_path / "cut-head.warc").write_bytes(plain[: plain.rindex(b"WARC/1.0") + 60])  # inside its headers
    (tmp_path / "junk.warc").write_bytes(b"this is no WARC file\r\n\r\n" * 10)
    got = {}
    for f in sorted(tmp_path.glob("*.warc*")):
        docs, quarantined = _ingest([InputSpec(str(f), format="warc")], tmp_path / f"w-{f.name}")
        got[f.name] = (len(docs), [q["reason"] for q in quarantined])
    assert got == {"cut-member.warc.gz": (2, ["truncated_gzip_member"]), "cut-record.warc": (2, ["truncated_record"]),
                   "cut-head.warc": (2, ["truncated_record"]), "junk.warc": (0, ["corrupt_warc"])}


def test_pages_warc_and_saved_dataset_on_ray_reach_the_catalog(tmp_path, ray_session):
    """The same readers in Ray workers: one run over a folder of pages, a WARC and a save_to_disk
    folder; the catalog holds every document with its url and the pages' meta."""
    _write_pages(tmp_path / "site", 4)
    pages = rawpages.topics(3, start=4)
    recs = [(f"https://docs.example.org/{name}", rawpages.page(name, text).encode(), "text/html", 200)
            for name, text in pages]
    (tmp_path / "crawl.warc.gz").write_bytes(rawpages.warc(recs))
    _pydoc_dataset(50).save_to_disk(str(tmp_path / "saved"))
    cfg = load_config(data={"name": "ray", "out": str(tmp_path / "run"), "stages": [{"kind": "exact_dedup"}],
                            "inputs": [{"path": str(tmp_path / "site")}, {"path": str(tmp_path / "crawl.warc.gz")},
                                       {"path": str(tmp_path / "saved")}]})
    run_pipeline(cfg, quiet=True)
    got = query(cfg.out, """SELECT source, count(*) AS n, count(url) AS urls, count(meta->>'$.title') AS titles
                            FROM docs GROUP BY ALL ORDER BY source""").to_pylist()
    assert got == [{"source": "crawl", "n": 3, "urls": 3, "titles": 3}, {"source": "saved", "n": 50, "urls": 0, "titles": 0},
                   {"source": "site", "n": 4, "urls": 4, "titles": 4}]


def _pydoc_dataset(n: int):
    import datasets

    texts = [t for _, t in rawpages.topics(1000)]
    return datasets.Dataset.from_dict({"text": [texts[i % len(texts)] + f"\n{i}" for i in range(n)],
                                       "id": [f"r{i}" for i in range(n)], "n": list(range(n))})


def test_save_to_disk_folder_is_a_dataset_under_auto(tmp_path):
    import datasets

    ds = _pydoc_dataset(1000)
    sets = tmp_path / "sets"
    ds.save_to_disk(str(sets / "saved"), max_shard_size="100KB")  # several Arrow files
    assert len(list((sets / "saved").glob("*.arrow"))) > 1
    docs, quarantined = _ingest([InputSpec(str(sets / "saved"))], tmp_path / "w")
    assert quarantined == [] and [d["id"] for d in docs] == [f"r{i}" for i in range(1000)]
    assert {d["source"] for d in docs} == {"saved"} and json.loads(docs[7]["meta"]) == {"n": 7}
    dd = datasets.DatasetDict({"train": ds.select(range(30)), "test": ds.select(range(30, 40))})
    dd.save_to_disk(str(sets / "dict"))
    docs, _ = _ingest([InputSpec(str(sets / "dict"), split="test")], tmp_path / "d")
    assert [d["id"] for d in docs] == [f"r{i}" for i in range(30, 40)]
    docs, _ = _ingest([InputSpec(str(sets / "dict"))], tmp_path / "a")
    assert len(docs) == 40
    with pytest.raises(ValueError, match=r"inputs\[0\].split: 'dev' is not a split"):
        plan_tasks([InputSpec(str(sets / "dict"), split="dev")], IngestConfig())
    # Inside a folder given as the input, a save_to_disk folder is a dataset too, named by its folder.
    docs, quarantined = _ingest([InputSpec(str(sets))], tmp_path / "n")
    assert quarantined == [] and len(docs) == 1000 + 40
    assert {d["source"] for d in docs} == {"saved", "dict"}


def test_dataset_in_the_local_hugging_face_cache_is_read_offline(tmp_path, monkeypatch):
    """`hf:owner/name` resolves the Hub cache's snapshot (refs/main -> snapshots/<commit>), the
    layout `huggingface_hub` writes, and picks files by config and split."""
    ds = _pydoc_dataset(60)
    repo = tmp_path / "hub" / "datasets--pyorg--topics"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snap = repo / "snapshots" / commit
    for config, rows in (("default", range(0, 40)), ("extra", range(40, 60))):
        (snap / config).mkdir(parents=True)
        part = ds.select(rows)
        part.select(range(0, len(part) - 10)).to_parquet(str(snap / config / "train-00000-of-00001.parquet"))
        part.select(range(len(part) - 10, len(part))).to_json(str(snap / config / "test-00000-of-00001.jsonl"))
    (snap / "README.md").write_text("---\nlicense: psf\n---\n# topics\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    docs, quarantined = _ingest([InputSpec("hf:pyorg/topics", config="default", split="train")], tmp_path / "w")
    assert quarantined == [] and [d["id"] for d in docs] == [f"r{i}" for i in range(30)]
    assert {d["source"] for d in docs} == {"topics"}
    docs, _ = _ingest([InputSpec("hf:pyorg/topics", split="test")], tmp_path / "t")
    assert sorted(d["id"] for d in docs) == sorted(f"r{i}" for i in [*range(30, 40), *range(50, 60)])
    with pytest.raises(ValueError, match="not in the local Hugging Face cache"):
        plan_tasks([InputSpec("hf:pyorg/absent")], IngestConfig())
    # A folder of the same shards, given with format: hf, reads them without the README.
    docs, quarantined = _ingest([InputSpec(str(snap), format="hf")], tmp_path / "f")
    assert quarantined == [] and len(docs) == 60


def test_a_run_that_keeps_nothing_fails_and_a_mostly_quarantined_input_warns(tmp_path, caplog):
    (tmp_path / "junk.jsonl").write_bytes(bytes(range(256)) * 64)  # binary, named .jsonl
    cfg = load_config(data={"name": "e", "out": str(tmp_path / "run"), "inputs": [{"path": str(tmp_path / "junk.jsonl")}]})
    with pytest.raises(CurateError, match=r"no documents kept: 1 records read .* top reason is binary_file \(1\)"):
        run_pipeline(cfg, quiet=True, executor="local")
    # One binary_file record, not one invalid_json per line of the binary.
    assert query(cfg.out, "SELECT reason FROM quarantine").column("reason").to_pylist() == ["binary_file"]
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": rawpages.topics(1)[0][1]}) + "\n")
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(good.read_text() + "not json\n" * 3)
    cfg = load_config(data={"name": "w", "out": str(tmp_path / "run2"),
                            "inputs": [{"path": str(good)}, {"path": str(mixed)}]})
    caplog.clear()
    with caplog.at_level("WARNING"):
        run_pipeline(cfg, quiet=True, executor="local")
    err = caplog.text  # the runner's warnings, which reach stderr
    assert "inputs[1]" in err and "3 of 4 records quarantined" in err and "invalid_json (3)" in err
    assert "inputs[0]" not in err


def test_an_optional_input_that_is_not_there_is_left_out_with_a_warning(tmp_path, caplog):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"text": rawpages.topics(1)[0][1]}) + "\n")
    (tmp_path / "empty").mkdir()
    inputs = [{"path": str(good)}, {"path": str(tmp_path / "absent"), "format": "html", "optional": True},
              {"path": str(tmp_path / "empty" / "*.html"), "optional": True}]
    cfg = load_config(data={"name": "o", "out": str(tmp_path / "run"), "inputs": inputs})
    caplog.clear()
    with caplog.at_level("WARNING"):
        run_pipeline(cfg, quiet=True, executor="local")
    assert "inputs[1]" in caplog.text and "inputs[2]" in caplog.text and "left out (optional" in caplog.text
    assert "inputs[0]" not in caplog.text
    assert query(cfg.out, "SELECT count(*) AS n FROM docs").to_pylist() == [{"n": 1}]
    # Without `optional`, the same absent path stops the run before it starts, naming the input.
    with pytest.raises(ValueError, match=r"inputs\[1\]\.path: .*absent.* does not exist"):
        plan_tasks([InputSpec(str(good)), InputSpec(str(tmp_path / "absent"))], IngestConfig())
    # Optional and nothing there at all: the run still fails, saying it read no records.
    cfg = load_config(data={"name": "n", "out": str(tmp_path / "run2"), "inputs": inputs[1:]})
    with pytest.raises(CurateError, match="no documents"):
        run_pipeline(cfg, quiet=True, executor="local")

def test_a_fifo_given_as_the_input_is_quarantined_unopened(tmp_path):
    fifo = tmp_path / "pipe.jsonl"
    released = fifo_with_writer(fifo)
    docs, quarantined = _ingest([InputSpec(str(fifo))], tmp_path / "w")
    assert docs == [] and [q["reason"] for q in quarantined] == ["not_a_regular_file"]
    assert not released.wait(0.5), "ingest opened the FIFO"
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # release the writer ourselves
    released.wait(30)
    os.close(fd)


def _bench_html():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "bench_html.py"
    spec = importlib.util.spec_from_file_location("bench_html", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not Path("/usr/share/doc/linux-doc-6.1/html/_sources").is_dir(),
                    reason="needs Debian's linux-doc-6.1 (real pages with their reST sources)")
def test_kernel_documentation_pages_match_their_sources(tmp_path):
    """80 real pages become 80 documents whose words match their reST sources (median F1 >= 0.94,
    bench/bench_html.py's measure); a WARC of the same pages gives the same texts."""
    import statistics

    bench = _bench_html()
    site = tmp_path / "site"
    site.mkdir()
    truth, recs = {}, []
    for i, (page, src) in enumerate(bench.pages(80)):
        name = f"{i:03d}-{page.stem}.html"
        (site / name).write_bytes(page.read_bytes())
        truth[str(site / name)] = bench.words(bench.source_text(src.read_text(errors="replace")))
        recs.append((f"https://docs.kernel.example/{name}", page.read_bytes(), "text/html; charset=utf-8", 200))
    docs, quarantined = _ingest([InputSpec(str(site), format="html")], tmp_path / "w")
    assert quarantined == [] and sorted(d["url"] for d in docs) == sorted(truth)
    assert statistics.median(bench.f1(d["text"], truth[d["url"]]) for d in docs) >= 0.94
    (tmp_path / "kernel.warc.gz").write_bytes(rawpages.warc(recs))
    warc_docs, quarantined = _ingest([InputSpec(str(tmp_path / "kernel.warc.gz"))], tmp_path / "k")
    assert quarantined == []
    assert {d["url"].rsplit("/", 1)[1]: d["text"] for d in warc_docs} == {Path(d["url"]).name: d["text"] for d in docs}
