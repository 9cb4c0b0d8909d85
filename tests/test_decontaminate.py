"""`decontaminate`: n-gram overlap with eval sets, checked against a plain Python reference on
real text (pydoc topics), in drop, span and flag mode, in-process and through the runner (on Ray
and in-process); GPT-3's N per set and its frequent n-grams ignored."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest

from curate.pipeline.running.config import load_config
from curate.pipeline.errors import ConfigError
from curate.stages.heldout.decontaminate import DecontaminateConfig, DecontaminateStage, EvalSetSpec
from curate.stages.heldout.wordgrams import word_ngrams

N = 13


def _topics() -> list[tuple[str, str]]:
    import pydoc_data.topics as t

    return sorted(t.topics.items())


def ref_ngrams(text: str, n: int = N) -> set[tuple[str, ...]]:
    """An independent reference: NFKC, lower case, runs of letters and digits."""
    words = re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", text).lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory) -> Path:
    """Two eval sets: `qa` quotes passages of some topics (case and punctuation changed, split
    over question/answer/choices), `clean` has text found in no topic."""
    topics = _topics()
    d = tmp_path_factory.mktemp("evalsets")
    qa = []
    for k, (name, text) in enumerate(topics[::25]):
        words = text.split()
        if len(words) < 80:
            continue
        passage = " ".join(words[30:60])
        rec = {"question": passage.upper().replace(" ", "  ,"), "answer": "yes", "choices": ["a", "b"]}
        if k % 2:
            rec = {"id": f"q{k}", "question": "What does it say?", "choices": [passage, "none of these"]}
        qa.append(rec)
    (d / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qa))
    clean = [{"text": " ".join(reversed(t.split()))[:2000]} for _, t in topics[:20]]
    pa_table = pa.Table.from_pylist(clean)
    import pyarrow.parquet as pq

    pq.write_table(pa_table, d / "clean.parquet")
    return d


def _docs() -> pa.Table:
    topics = _topics()
    return pa.table({"id": [n for n, _ in topics], "text": [t for _, t in topics],
                     "source": ["pydoc"] * len(topics), "n_chars": [len(t) for _, t in topics]})


def _expected(eval_dir: Path) -> dict[str, set[str]]:
    """Documents sharing a 13-gram with any string of each set, by the reference."""
    out = {}
    for name, recs in (("qa", [json.loads(x) for x in (eval_dir / "qa.jsonl").read_text().splitlines()]),
                       ("clean", pa.parquet.read_table(eval_dir / "clean.parquet").to_pylist())):
        grams = set()
        for r in recs:
            for v in r.values():
                for s in v if isinstance(v, list) else [v]:
                    grams |= ref_ngrams(s)
        out[name] = {i for i, t in _topics() if ref_ngrams(t) & grams}
    return out


def _stage(eval_dir: Path, **kw) -> DecontaminateStage:
    cfg = DecontaminateConfig(sets=[EvalSetSpec("qa", str(eval_dir / "qa.jsonl")),
                                    EvalSetSpec("clean", str(eval_dir / "clean.parquet"))], **kw)
    stage = DecontaminateStage(cfg)
    stage.setup()
    return stage


def test_ngrams_match_the_reference():
    texts = [t for _, t in _topics()[:40]]
    hashes, owner = word_ngrams(texts, N)
    for i, t in enumerate(texts):  # one hash per window, windows never cross texts
        words = re.findall(r"[^\W_]+", unicodedata.normalize("NFKC", t).lower())
        assert (owner == i).sum() == max(0, len(words) - N + 1)
    a, _ = word_ngrams(["Hello, WORLD -- it's   fine"], 3)
    b, _ = word_ngrams(["hello world it s fine"], 3)
    assert a.tolist() == b.tolist() and len(a) == 3


def test_non_ascii_words_match_the_reference():
    """Every character HTML5 names (letters, digits, symbols, punctuation, astral code points)."""
    from html.entities import html5

    from curate.stages.heldout.wordgrams import _words

    pairs = sorted(html5.items())
    texts = [" ".join(f"x{v}{k}{v}y" for k, v in pairs[i:i + 40]) for i in range(0, len(pairs), 40)]
    norm = [unicodedata.normalize("NFKC", t).lower() for t in texts]  # Arrow and Python lower İ apart
    words, owner = _words(pa.array(norm))
    expected = [re.findall(r"[^\W_]+", t) for t in norm]
    assert words.to_pylist() == [w for ws in expected for w in ws]
    assert owner.tolist() == [i for i, ws in enumerate(expected) for _ in ws]


def test_drop_mode_finds_exactly_the_reference_documents(eval_dir):
    expected = _expected(eval_dir)
    assert expected["qa"] and not expected["clean"]
    out = _stage(eval_dir).process(_docs())
    dropped = dict(zip(out.rejected.column("id").to_pylist(), out.rejected.column("reason").to_pylist()))
    assert set(dropped) == expected["qa"]
    assert set(dropped.values()) == {"contaminated:qa"}
    assert out.kept.num_rows + out.rejected.num_rows == len(_topics())
    matches = [json.loads(k) for k in out.counters["decontaminate_matches"]]
    assert {doc for _, _, doc in matches} == expected["qa"]
    assert {s for s, _, _ in matches} == {"qa"}
    # items are named by their `id`, else by file and line
    assert any(item.startswith("q") for _, item, _ in matches)
    assert any(item.startswith("qa.jsonl:") for _, item, _ in matches)


def test_flag_mode_keeps_everything_and_lists_the_sets(eval_dir):
    expected = _expected(eval_dir)
    out = _stage(eval_dir, mode="flag").process(_docs())
    assert out.rejected.num_rows == 0
    flagged = {i for i, s in zip(out.kept.column("id").to_pylist(), out.kept.column("contaminated_sets").to_pylist()) if s}
    assert flagged == expected["qa"]
    assert out.counters["contaminated:qa"] == len(expected["qa"])


def test_min_ngrams_and_n(eval_dir):
    base = _expected(eval_dir)["qa"]
    strict = _stage(eval_dir, min_ngrams=10_000).process(_docs())
    assert strict.rejected.num_rows == 0
    longer = _stage(eval_dir, n=25).process(_docs())  # passages are 30 words: still found
    assert set(longer.rejected.column("id").to_pylist()) == base


def test_config_errors_name_the_field(tmp_path):
    base = {"name": "x", "out": str(tmp_path / "r"), "inputs": [{"path": "x.jsonl"}]}
    for stage, field in [({"kind": "decontaminate"}, "stages[0].sets"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p", "feilds": ["q"]}]}, "stages[0].sets[0].feilds"),
                         ({"kind": "decontaminate", "sets": [{"name": "a b", "path": "p"}]}, "stages[0].sets[0].name"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p"}], "mode": "remove"}, "stages[0].mode"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p"}], "n": 0}, "stages[0].n"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p", "n": 0}]}, "stages[0].sets[0].n"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p"}], "max_doc_frequency": 0},
                          "stages[0].max_doc_frequency"),
                         ({"kind": "decontaminate", "sets": [{"name": "a", "path": "p"}], "max_splits": 0},
                          "stages[0].max_splits")]:
        with pytest.raises(ConfigError) as e:
            load_config(data={**base, "stages": [stage]})
        assert e.value.field == field


def test_missing_eval_file_is_a_clear_error(tmp_path):
    stage = DecontaminateStage(DecontaminateConfig(sets=[EvalSetSpec("a", str(tmp_path / "none.jsonl"))]))
    with pytest.raises(FileNotFoundError, match="eval set 'a'"):
        stage.setup()


def test_runner_drop_mode_stats_and_catalog(ray_session, eval_dir, tmp_path):
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.running.runner import run_pipeline
    from curate.pipeline.reporting.breadth_summary import decontamination_report, breadth_summary

    corpus = tmp_path / "topics.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t, "source": "pydoc"}) + "\n" for i, t in _topics()))
    data = {"name": "d", "out": str(tmp_path / "run"), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 300},
            "stages": [{"kind": "decontaminate", "sets": [{"name": "qa", "path": str(eval_dir / "qa.jsonl")},
                                                          {"name": "clean", "path": str(eval_dir / "clean.parquet")}]}]}
    run_pipeline(load_config(data=data), workers=2, quiet=True)
    expected = _expected(eval_dir)["qa"]
    con = connect(tmp_path / "run", text=False)
    got = {r[0] for r in con.execute("SELECT id FROM rejected WHERE reason = 'contaminated:qa'").fetchall()}
    assert got == expected
    report = decontamination_report(con)["decontaminate"]
    assert set(report["qa"]["documents"]) == expected and report["qa"]["items_found"] >= 1
    assert report["clean"]["items_found"] == 0
    lines = breadth_summary(con)
    assert any("qa" in ln and "items" in ln for ln in lines)
    stats = json.loads((tmp_path / "run" / "decontaminate" / "stats.json").read_text())
    assert stats["rejected_by_reason"] == {"contaminated:qa": len(expected)}


# ------------------------------------------------------------- the method as published (GPT-3)
LICENCE = "This program is free software and you can redistribute it and modify it under the terms of the licence"
SHORT = "the lighthouse keeper counted exactly nine silver gulls today"  # 9 words


def test_gpt3_n_rule():
    from curate.stages.heldout.wordgrams import gpt3_n

    assert gpt3_n([9] * 95 + [100] * 5) == 9  # the 5th percentile of item lengths
    assert gpt3_n([3, 4, 50, 60]) == 8  # never below 8 (GPT-3: spurious collisions below)
    assert gpt3_n([40] * 20) == 13  # never above 13
    assert gpt3_n([]) == 13


def _licence_corpus(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """60 pydoc topics; the first 30 open with a licence sentence, topic 45 quotes a 9-word item.
    The eval set quotes both, each in one item."""
    texts = [t for _, t in _topics() if len(t) > 600][:60]
    ids = [f"d{i}" for i in range(60)]
    docs = [(LICENCE + "\n\n" + t if i < 30 else t) + (f"\n\n{SHORT}.\n" if i == 45 else "")
            for i, t in enumerate(texts)]
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t, "source": "docs"}) + "\n" for i, t in zip(ids, docs)))
    ev = tmp_path / "eval.jsonl"
    ev.write_text(json.dumps({"question": "Which words open the licence notice?", "answer": LICENCE}) + "\n"
                  + json.dumps({"question": "What did he count?", "answer": SHORT}) + "\n")
    return corpus, ev, ids


def _run(tmp_path: Path, corpus: Path, ev: Path, out: str = "run", **stage) -> Path:
    from curate.pipeline.running.runner import run_pipeline

    data = {"name": "d", "out": str(tmp_path / out), "inputs": [{"path": str(corpus)}], "ingest": {"shard_docs": 20},
            "stages": [{"kind": "decontaminate", "sets": [{"name": "ev", "path": str(ev)}], **stage}]}
    run_pipeline(load_config(data=data), quiet=True, executor="local")
    return tmp_path / out


def test_short_item_caught_and_frequent_licence_ignored(tmp_path):
    """A 9-word item quoted in one document is caught (N = 9 by GPT-3's rule, not 13); a licence
    sentence in 30 documents and in one item drops none of them and is reported as ignored."""
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.reporting.breadth_summary import breadth_summary, decontamination_report

    corpus, ev, ids = _licence_corpus(tmp_path)
    run = _run(tmp_path, corpus, ev)
    con = connect(run, text=False)
    assert con.execute("SELECT id, reason FROM rejected").fetchall() == [("d45", "contaminated:ev")]
    report = decontamination_report(con)["decontaminate"]["ev"]
    assert report["n"] == 9 and report["items_total"] == 2 and report["documents"] == ["d45"]
    # every 9-gram of the licence sentence is in the 30 documents, and only those are ignored
    words = re.findall(r"[^\W_]+", LICENCE.lower())
    assert report["ignored"] == {" ".join(words[i:i + 9]): 30 for i in range(len(words) - 8)}
    assert any("frequent n-grams ignored" in ln for ln in breadth_summary(con))
    # counted over the whole input (3 shards of 20): no shard alone holds the licence 10 times over
    assert len(list((run / "decontaminate" / "_done").glob("*.json"))) == 3
    # with nothing ignored, the licence drops all 30
    strict = _run(tmp_path, corpus, ev, out="strict", max_doc_frequency=None)
    dropped = {r[0] for r in connect(strict, text=False).execute("SELECT id FROM rejected").fetchall()}
    assert dropped == set(ids[:30]) | {"d45"}


def test_rerun_reuses_matches_and_redoes_only_what_changed(tmp_path):
    corpus, ev, _ = _licence_corpus(tmp_path)
    run = _run(tmp_path, corpus, ev)
    work = {p: p.stat().st_mtime_ns for p in (run / "decontaminate" / "_work").glob("*.npz")}
    done = {p: p.stat().st_mtime_ns for p in (run / "decontaminate" / "_done").glob("*.json")}
    assert len(work) == 3
    _run(tmp_path, corpus, ev)
    assert {p: p.stat().st_mtime_ns for p in work} == work and {p: p.stat().st_mtime_ns for p in done} == done
    _run(tmp_path, corpus, ev, max_doc_frequency=40)  # the licence is no longer frequent: decided again, not matched
    assert {p: p.stat().st_mtime_ns for p in work} == work
    assert all(p.stat().st_mtime_ns != t for p, t in done.items())


def test_span_mode_removes_the_span_and_keeps_the_rest(tmp_path):
    """GPT-3's filter: the match and 200 characters each side go, the rest stays; a document cut
    into more than `max_splits` pieces is dropped; through the runner the text is rewritten."""
    from curate.pipeline.catalog.db import connect

    topics = [t for _, t in _topics() if len(t) > 3000]
    before, after, many = topics[0][:1500], topics[1][:1500], topics[2]
    quoted = before + " " + SHORT + " " + after
    chunks = [many[i:i + 400] for i in range(0, 4800, 400)]
    split = f" {SHORT} ".join(chunks)  # 11 quotes, 12 pieces
    ev = tmp_path / "eval.jsonl"
    ev.write_text(json.dumps({"answer": SHORT}) + "\n")
    table = pa.table({"id": ["q", "s", "c"], "text": [quoted, split, topics[3]], "n_chars": [0, 0, 0]})
    out = DecontaminateStage(DecontaminateConfig(sets=[EvalSetSpec("ev", str(ev))], mode="span")).process(table)
    assert out.rejected.column("id").to_pylist() == ["s"]
    kept = dict(zip(out.kept.column("id").to_pylist(), out.kept.column("text").to_pylist()))
    assert SHORT not in kept["q"] and "lighthouse" not in kept["q"]
    assert kept["q"] == before[:-200].strip() + "\n\n" + after[200:].strip()
    assert kept["c"] == topics[3]
    assert out.kept.column("n_chars").to_pylist()[0] == len(kept["q"])
    assert out.kept.column("contaminated_sets").to_pylist() == [["ev"], []]
    assert out.counters["span_documents_cut"] == 1 and out.counters["span_documents_dropped"] == 1
    # characters that NFKC widens (the ellipsis becomes "...", the ligature "fi") before the quote:
    # the cut is placed in the original text, not shifted by them
    accented = "Café … ﬁn déjà vu. " * 40
    odd = accented + SHORT.upper().replace(" ", " … ") + " " + after
    cut_odd = DecontaminateStage(DecontaminateConfig(sets=[EvalSetSpec("ev", str(ev))], mode="span")).process(
        pa.table({"id": ["o"], "text": [odd], "n_chars": [0]})).kept.column("text").to_pylist()
    assert cut_odd == [accented[:-200].strip() + "\n\n" + after[200:].strip()]
    # the runner writes full shards (the text changed); the catalog reads the cut text
    corpus = tmp_path / "in.jsonl"
    corpus.write_text("".join(json.dumps({"id": i, "text": t, "source": "s"}) + "\n"
                              for i, t in zip(["q", "s", "c"], [quoted, split, topics[3]])))
    run = _run(tmp_path, corpus, ev, mode="span")
    con = connect(run)
    assert dict(con.execute("SELECT id, text FROM docs").fetchall()) == kept
    assert con.execute("SELECT id FROM rejected").fetchall() == [("s",)]
