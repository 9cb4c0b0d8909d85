"""The `lm_score` stage: bits per byte under a tiny model trained here, on Ray actors that load it
once, equal to a plain in-process forward pass; the perplexity filter and buckets; the shipped
config run end to end."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import torch

from curate.pipeline.errors import ConfigError  # noqa: E402
from curate.scorers import lm  # noqa: E402
from curate.stages.score.lm_score import LMModelSpec, LMScoreConfig, LMScoreStage  # noqa: E402
from test_scorers_corpus import doc_table  # noqa: E402
from tinylm import code_texts, topic_texts, train_sp, train_tiny  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# fp32 on CPU. The stage batches windows of many documents with right padding, a plain forward runs
# one document alone: the same sums in a different matmul shape agree to ~1e-7 relative, far below
# any off-by-one (a shifted target changes a document's bits by whole percents).
REL = 1e-6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm")
    texts = topic_texts()
    sp = train_sp(texts, d / "sp.model")
    return train_tiny(texts, sp, d / "tiny", steps=40)


@functools.lru_cache(maxsize=2)
def _plain(folder: Path):
    import sentencepiece as spm

    from curate.training.hf_io import load_model

    return spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")), load_model(folder).eval()


def plain_bpb(folder: Path, text: str, fits: int = 1024) -> float:
    """One unbatched forward over [BOS] + tokens with the model's own modules, every token scored."""
    sp, model = _plain(folder)
    ids = [sp.bos_id(), *sp.encode(text)]
    assert len(ids) <= fits, f"{len(ids)} tokens: a window of the stage would not hold the whole document"
    with torch.no_grad():
        logits = model(torch.tensor([ids]))[0, :-1].float()
    nll = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item()
    return nll / math.log(2) / len(text.encode("utf-8"))


def docs(n: int) -> list[str]:
    """Short real documents (each fits one 1024-token window): pydoc prose and Python source."""
    prose = [t[:700] for t in topic_texts()[::3]]
    code = [c[:700] for c in code_texts(40)]
    out = [x for pair in zip(prose, code) for x in pair]
    return out[:n]


class ProbeWorker:
    """Built once per actor, like the runner's worker: the stage and its setup()."""

    def __init__(self, config: LMScoreConfig):
        self.path = config.resolved()[0][0]
        self.stage = LMScoreStage(config)
        self.stage.setup()

    def process(self, table):
        return os.getpid(), lm.loads_of(self.path), self.stage.process(table)


def _make(config):
    return lambda: ProbeWorker(config)


def test_on_ray_equals_an_in_process_forward_and_loads_once(ray_session, tiny):
    import ray.cloudpickle

    from curate.pipeline.running.adapter import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    texts = docs(48)
    tables = [doc_table(texts[i::6]) for i in range(6)]
    config = LMScoreConfig(models=[LMModelSpec(path=str(tiny), name="tiny")], block=1024, stride=512,
                           batch_tokens=4096, device="cpu")
    results = RayExecutor(workers=2).map_actors(_make(config), "process", tables)
    pids = {pid for pid, _, _ in results}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids
    # Six batches over at most two actors, and each actor loaded the model exactly once.
    assert all(loads == 1 for _, loads, _ in results), [loads for _, loads, _ in results]
    for table, (_, _, out) in zip(tables, results):
        assert out.rejected.num_rows == 0 and out.kept.num_rows == table.num_rows
        assert out.counters["lm_tokens"] > table.num_rows
        got = out.kept.column("bpb_tiny").to_pylist()
        for text, value in zip(table.column("text").to_pylist(), got):
            assert value == pytest.approx(plain_bpb(tiny, text), rel=REL)


def test_long_documents_use_the_sliding_window(tiny):
    """A document longer than the block is scored window by window: every token once, close to the
    whole-context score, and exactly the scoring core's value (the stage adds nothing to it)."""
    from curate.training.bpb import load_scoring_model

    long = "\n\n".join(topic_texts()[:6])[:6000]
    stage = LMScoreStage(LMScoreConfig(models=[LMModelSpec(path=str(tiny))], block=128, stride=64, device="cpu"))
    value = stage.process(doc_table([long])).kept.column("bpb_tiny").to_pylist()[0]
    bits, n_bytes, _ = load_scoring_model(tiny).doc_bits([long], block=128, stride=64)[0]
    assert value == pytest.approx(bits / n_bytes, rel=1e-12)
    assert value == pytest.approx(plain_bpb(tiny, long, fits=10**6), rel=0.1)


def test_filter_and_buckets(tiny):
    texts = docs(24)
    base = dict(models=[LMModelSpec(path=str(tiny), name="a"), LMModelSpec(path=str(tiny), name="b")], device="cpu")
    scored = LMScoreStage(LMScoreConfig(**base)).process(doc_table(texts)).kept
    a = np.array(scored.column("bpb_a").to_pylist())
    assert np.array_equal(a, np.array(scored.column("bpb_b").to_pylist()))
    cut = float(np.median(a))
    t1, t2 = np.quantile(a, [1 / 3, 2 / 3])
    out = LMScoreStage(LMScoreConfig(**base, max_bpb=cut, filter_model="b", bucket_thresholds=[float(t1), float(t2)])
                       ).process(doc_table(texts))
    assert out.kept.num_rows + out.rejected.num_rows == len(texts)
    assert set(out.rejected.column("reason").to_pylist()) == {"lm_bpb_above:b"}
    assert all(v <= cut for v in out.kept.column("bpb_b").to_pylist())
    assert out.rejected.num_rows == int((a > cut).sum())
    kept = out.kept.to_pydict()
    for v, bucket in zip(kept["bpb_b"], kept["lm_bucket"]):
        assert bucket == 1 + (v >= t1) + (v >= t2)


@pytest.mark.parametrize("fields, field", [
    ({"models": []}, "stages[0].models"),
    ({"models": [{"path": "m"}, {"path": "x/m"}]}, "stages[0].models"),
    ({"models": [{"path": "m", "name": "a-b"}]}, "stages[0].models[0].name"),
    ({"models": [{"path": "m"}], "stride": 512}, "stages[0].stride"),
    ({"models": [{"path": "m"}], "filter_model": "zz"}, "stages[0].filter_model"),
    ({"models": [{"path": "m"}], "bucket_thresholds": [2.0, 1.0]}, "stages[0].bucket_thresholds"),
    ({"models": [{"path": "m"}], "device": "tpu"}, "stages[0].device"),
])
def test_config_errors_name_the_field(fields, field):
    from curate.pipeline.running.config import load_config

    with pytest.raises(ConfigError) as e:
        load_config(data={"name": "x", "out": "runs/x", "inputs": [{"path": "x.jsonl"}],
                          "stages": [{"kind": "lm_score", **fields}]})
    assert e.value.field == field


def test_gpu_hint_is_dropped_without_gpus(ray_session):
    from curate.pipeline.running.adapter import actor_options

    stage = LMScoreStage(LMScoreConfig(models=[LMModelSpec(path="m")]))
    assert stage.resources() == {"num_gpus": 1.0}
    assert LMScoreStage(LMScoreConfig(models=[LMModelSpec(path="m")], device="cpu")).resources() == {}
    import ray

    if ray.cluster_resources().get("GPU", 0) == 0:
        assert actor_options(stage.resources()) == ({}, sys.maxsize)


def test_shipped_config_runs(ray_session, tiny, tmp_path):
    """configs/lm_score.yaml on real text: columns in the catalog, the filter's drops in `rejected`."""
    from curate.pipeline.catalog.db import query
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    demo = tmp_path / "demo"
    shutil.copytree(tiny, demo / "train" / "model")
    (demo / "tokens").mkdir()
    shutil.move(demo / "train" / "model" / "tokenizer.model", demo / "tokens" / "tokenizer.model")
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t, "source": "pydoc" if i % 2 == 0 else "python"}) + "\n"
                            for i, t in enumerate(docs(40))))
    cfg = load_config(REPO / "configs" / "lm_score.yaml", inputs=[str(data)], out=str(tmp_path / "lm_score"), workers=2)
    reports = run_pipeline(cfg, quiet=True)
    stats = reports[-1].stats.totals
    assert stats["in"] == 40 and stats["kept"] + stats["rejected"] == 40 and stats["lm_tokens"] > 0
    rows = query(cfg.out, "SELECT bpb_demo, lm_bucket FROM docs").to_pydict()
    assert len(rows["bpb_demo"]) == stats["kept"]
    assert all(0 < v < 20 for v in rows["bpb_demo"]) and set(rows["lm_bucket"]) <= {1, 2, 3}
    reasons = query(cfg.out, "SELECT DISTINCT reason FROM rejected WHERE stage = 'lm_score'").column("reason").to_pylist()
    assert reasons in ([], ["lm_bpb_above:demo"])
    # A rerun reuses every shard; a changed model invalidates them.
    assert run_pipeline(load_config(REPO / "configs" / "lm_score.yaml", inputs=[str(data)], out=cfg.out),
                        quiet=True)[-1].skipped == reports[-1].shards
    before = cfg.stage_specs[-1].config.model_stamp
    train_tiny(topic_texts()[:20], demo / "tokens" / "tokenizer.model", demo / "train" / "model", steps=2)
    again = load_config(REPO / "configs" / "lm_score.yaml", inputs=[str(data)], out=cfg.out)
    assert again.stage_specs[-1].config.model_stamp != before


def test_ccnet_buckets_are_cut_per_language(tiny, tmp_path):
    """CCNet's head / middle / tail per language: German (spaCy's example sentences), which the
    tiny English model scores worse than every English document, still gets its own split at its
    own 30th and 60th percentiles; one global cut puts all of it in the tail."""
    import importlib

    from curate.pipeline.catalog.db import connect
    from curate.pipeline.reporting.stats import summary_lines
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    german = importlib.import_module("spacy.lang.de.examples").sentences
    english = [t[:700] for t in topic_texts()[::3]][:20]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t, "source": "s"}) + "\n" for t in english + german))

    def run(by: list[str]):
        cfg = {"name": "b", "out": str(tmp_path / "run"), "inputs": [{"path": str(data)}], "ingest": {"shard_docs": 10},
               "stages": [{"kind": "langid"},
                          {"kind": "lm_score", "models": [{"path": str(tiny), "name": "t"}], "device": "cpu"},
                          {"kind": "lm_bucket", "by": by}]}
        reports = run_pipeline(load_config(data=cfg), quiet=True, executor="local")
        assert reports[-1].stats.totals["in"] == reports[-1].stats.totals["kept"] == len(english) + len(german)
        rows = connect(tmp_path / "run", text=False).execute("SELECT lang, bpb_t, lm_bucket FROM docs").fetchall()
        return {lang: [(b, k) for g, b, k in rows if g == lang] for lang in {r[0] for r in rows}}

    per_lang = run(["lang"])
    en, de = per_lang["en"], per_lang["de"]
    assert len(de) >= 6 and min(b for b, _ in de) > max(b for b, _ in en)  # all German scores worse
    for docs in per_lang.values():
        if len(docs) >= 3:
            scores = np.array([b for b, _ in docs])
            cuts = np.percentile(scores, [30, 60])
            assert [k for _, k in docs] == [1 + int(b >= cuts[0]) + int(b >= cuts[1]) for b in scores]
            assert {k for _, k in docs} == {1, 2, 3}
    assert any(ln.startswith("lm buckets (lm_bucket, bpb_t) lang=de: cut at") for ln in summary_lines(tmp_path / "run"))
    one_cut = run([])  # the scores are reused; only the buckets are redone
    assert {k for _, k in one_cut["de"]} == {3}


@pytest.mark.parametrize("fields, field", [
    ({"percentiles": [60, 30]}, "stages[0].percentiles"),
    ({"percentiles": [0, 50]}, "stages[0].percentiles"),
    ({"by": ["text"]}, "stages[0].by"),
    ({"sample_docs": 0}, "stages[0].sample_docs"),
])
def test_bucket_config_errors_name_the_field(fields, field):
    from curate.pipeline.running.config import load_config

    with pytest.raises(ConfigError) as e:
        load_config(data={"name": "x", "out": "/tmp/x", "inputs": [{"path": "x.jsonl"}],
                          "stages": [{"kind": "lm_bucket", **fields}]})
    assert e.value.field == field


def test_bucket_without_scores_or_group_column_is_one_clear_error(tmp_path):
    from curate.pipeline.errors import CurateError
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"text": t, "source": "s"}) + "\n" for t in docs(4)))
    for stage, message in [({}, "column: the input has 0 bpb_\\* columns"),
                           ({"column": "n_chars"}, "by: column `lang` is not in the input")]:
        cfg = {"name": "b", "out": str(tmp_path / "run"), "inputs": [{"path": str(data)}],
               "stages": [{"kind": "lm_bucket", **stage}]}
        with pytest.raises(CurateError, match=message):
            run_pipeline(load_config(data=cfg), quiet=True, executor="local")
