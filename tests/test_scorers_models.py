"""fastText quality classifier and domain tagger trained on real text; length-weighted buckets."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from curate.scorers.buckets import assign_buckets, weighted_thresholds
from curate.scorers.domain import DomainRule, RuleTagger, hint_taxonomy, predict_domains, train_domain
from curate.scorers.quality import FastTextParams, QualityScorer, auc, train_quality
from curate.stages.score.annotate import DomainConfig, DomainStage, QualityConfig, QualityStage
from test_scorers_corpus import codec_tables, doc_table, licences, pydoc_chunks, stdlib_code

def weight_fractions(buckets, weights, n_buckets: int) -> list[float]:
    """Share of the total weight in each bucket 1..n_buckets."""
    b = np.asarray(buckets)
    w = np.asarray(weights, dtype=np.float64)
    total = w.sum() or 1.0
    return [float(w[b == k].sum() / total) for k in range(1, n_buckets + 1)]


SMALL = FastTextParams(bucket=50_000)  # DCLM defaults (wordNgrams 2, dim 100, epoch 5, lr 0.1), fewer buckets


@pytest.fixture(scope="module")
def quality_model(tmp_path_factory):
    clean = pydoc_chunks(200)
    junk = stdlib_code(200)
    path = tmp_path_factory.mktemp("q") / "quality_ref.bin"
    meta = train_quality(clean, junk, path, params=SMALL, holdout=0.25, seed=1)
    return path, meta


def test_quality_separates_clean_from_junk(quality_model):
    path, meta = quality_model
    h = meta["heldout"]
    assert h["auc"] >= 0.9 and h["n_pos"] >= 30 and h["n_neg"] >= 30
    saved = json.loads(path.with_suffix(".json").read_text())
    assert saved["heldout"] == h and saved["params"]["wordNgrams"] == 2 and saved["params"]["dim"] == 100
    # Unseen documents of each source (not in training at all) are still told apart.
    scorer = QualityScorer(path)
    fresh_clean = pydoc_chunks(400)[200:260]
    fresh_junk = stdlib_code(400)[200:260]
    assert len(fresh_clean) == len(fresh_junk) == 60
    s = scorer.scores(fresh_clean + fresh_junk)
    assert auc(s, [1] * len(fresh_clean) + [0] * len(fresh_junk)) >= 0.9
    assert np.all((s >= 0) & (s <= 1))


def test_auc_is_rank_based():
    assert auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5


def test_buckets_are_length_weighted():
    rng = np.random.default_rng(0)
    scores = rng.random(5000)
    weights = rng.integers(100, 20000, size=5000)
    t = weighted_thresholds(scores, weights, [0.25, 0.5, 0.75, 0.9])
    fr = weight_fractions(assign_buckets(scores, t), weights, 5)
    assert t == sorted(t)
    assert fr[4] == pytest.approx(0.10, abs=0.01) and fr[0] == pytest.approx(0.25, abs=0.01)
    # Long documents at the top: the top bucket then holds fewer documents than 10%.
    w2 = np.where(scores > 0.8, 50_000, 100)
    b2 = assign_buckets(scores, weighted_thresholds(scores, w2, [0.25, 0.5, 0.75, 0.9]))
    assert weight_fractions(b2, w2, 5)[4] == pytest.approx(0.10, abs=0.01) and np.mean(b2 == 5) < 0.05


def test_quality_stage_columns_and_buckets(quality_model):
    path, meta = quality_model
    texts = pydoc_chunks(300)[200:240] + stdlib_code(300)[200:240]
    table = doc_table(texts)
    out = QualityStage(QualityConfig(model=str(path), min_score=0.5)).process(table)
    assert out.kept.num_rows + out.rejected.num_rows == table.num_rows
    assert set(out.rejected.column("reason").to_pylist()) <= {"quality_low_score"}
    scores = QualityScorer(path).scores(out.kept.column("text").to_pylist())
    assert np.allclose(out.kept.column("quality_ref").to_numpy(), scores, atol=1e-6)
    assert (out.kept.column("quality_ref").to_numpy() >= 0.5).all()
    buckets = out.kept.column("quality_bucket").to_numpy()
    assert np.array_equal(buckets, assign_buckets(scores, meta["bucket_thresholds"]))
    assert set(buckets) <= {1, 2, 3, 4, 5}


SOURCES = {"code": lambda: stdlib_code(120), "docs": lambda: pydoc_chunks(120),
           "legal": lambda: licences(), "tables": lambda: codec_tables(120)}


@pytest.fixture(scope="module")
def domain_model(tmp_path_factory):
    seeds = [(label, t) for label, get in SOURCES.items() for t in get()]
    path = tmp_path_factory.mktemp("d") / "domain_t.bin"
    return path, train_domain(seeds, path, params=FastTextParams(epoch=25, lr=0.5, bucket=50_000), holdout=0.25, seed=0)


def test_domain_tagger_accuracy(domain_model):
    path, meta = domain_model
    h = meta["heldout"]
    assert h["accuracy"] >= 0.9 and h["n"] >= 80
    m = np.array(h["confusion"])
    assert m.sum() == h["n"] and np.trace(m) / m.sum() == pytest.approx(h["accuracy"])
    assert meta["labels"] == sorted(SOURCES)


def test_domain_stage_rules_then_model(domain_model):
    path, _ = domain_model
    code, docs = stdlib_code(200)[150:160], pydoc_chunks(200)[150:160]
    table = doc_table(code + docs, source=["python-stdlib"] * 10 + ["unknown"] * 10)
    cfg = DomainConfig(taxonomy=[DomainRule("code", source=["python-*"])], mode="rules_then_model",
                       model=str(path), default="web")
    out = DomainStage(cfg).process(table)
    rows = out.kept.to_pylist()
    assert [r["domain"] for r in rows[:10]] == ["code"] * 10 and all(r["domain_score"] == 1.0 for r in rows[:10])
    from curate.scorers import ft

    labels, probs = predict_domains(ft.load_model(path), docs, cfg.max_chars)
    assert [r["domain"] for r in rows[10:]] == labels
    assert np.allclose([r["domain_score"] for r in rows[10:]], probs, atol=1e-6)
    assert out.counters == {"by_rule": 10, "by_model": 10, "by_default": 0}


def test_rule_tagger_defaults():
    tagger = RuleTagger([r.as_rule() for r in hint_taxonomy()])
    assert tagger.tag_one("x = 1", "python-stdlib", None) == "code"
    assert tagger.tag_one("text", "man", "file:///usr/share/man/man1/ls.1.gz") == "tech-docs"
    assert tagger.tag_one("text", "changelog", "file:///usr/share/doc/x/changelog.Debian.gz") == "changelog"
    assert tagger.tag_one("text", "license", "file:///usr/share/common-licenses/GPL-3") == "legal"
    # Content rule (code detection) where metadata says nothing: code is found, prose is not.
    code_hits = [tagger.tag_one(t, "somewhere", None) == "code" for t in stdlib_code(150)]
    prose_hits = [tagger.tag_one(t, "somewhere", None) == "code" for t in pydoc_chunks(150) + licences()]
    assert np.mean(code_hits) >= 0.9 and np.mean(prose_hits) <= 0.05


def test_save_model_writes_metadata_and_model_without_leftovers(quality_model, tmp_path):
    from curate.scorers import ft

    path, meta = quality_model
    out = tmp_path / "m" / "quality_copy.bin"
    ft.save_model(ft.load_model(path), out, {**meta, "copy": True})
    assert json.loads(out.with_suffix(".json").read_text())["copy"] is True
    assert QualityScorer(out).scores(["some text"]).shape == (1,)
    assert sorted(p.name for p in out.parent.iterdir()) == ["quality_copy.bin", "quality_copy.json"]


def test_a_model_retrained_in_place_is_loaded_again(tmp_path):
    """The process's model cache follows the file: retraining at the same path (a service worker
    that scored with the old model) serves the new one, and an unchanged file is not read again."""
    from curate.scorers import ft

    path = tmp_path / "quality_x.bin"
    train_quality(pydoc_chunks(60), stdlib_code(60), path, params=SMALL, seed=1)
    first = ft.load_model(path)
    assert ft.load_model(path) is first and ft.loads_of(path) == 1
    # Swapped labels: the same texts, the opposite classifier.
    train_quality(stdlib_code(60), pydoc_chunks(60), path, params=SMALL, seed=1)
    assert ft.load_model(path) is not first and ft.loads_of(path) == 2
    code_first = QualityScorer(path).scores(stdlib_code(60)[:10]).mean()
    assert code_first > QualityScorer(path).scores(pydoc_chunks(60)[:10]).mean()
    with pytest.raises(FileNotFoundError, match="a directory, not a model file"):
        ft.load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        ft.load_model(tmp_path / "missing.bin")


def test_model_stamp_is_a_content_digest_and_the_path_stays_relative(quality_model, tmp_path):
    import shutil

    from curate.stages.base import config_dict
    from curate.stages.shardio import stable_hash

    path, _ = quality_model
    runs = []
    for name in ("a", "b"):  # the same models in two run directories (a moved run)
        models = tmp_path / name / "models"
        models.mkdir(parents=True)
        shutil.copy(path, models / "quality_ref.bin")
        shutil.copy(path.with_suffix(".json"), models / "quality_ref.json")
        cfg = QualityConfig(model="models/quality_ref.bin")
        cfg.bind_run_dir(tmp_path / name)
        runs.append(cfg)
    a, b = runs
    assert a.model == "models/quality_ref.bin" and a.model_file() == (tmp_path / "a" / "models" / "quality_ref.bin")
    assert a.model_stamp and stable_hash(config_dict(a)) == stable_hash(config_dict(b))
    # New bucket thresholds in the metadata change the stamp (and so invalidate the stage's markers).
    meta_b = tmp_path / "b" / "models" / "quality_ref.json"
    meta_b.write_text(meta_b.read_text().replace('"bucket_thresholds"', '"bucket_thresholds_old": 0, "bucket_thresholds"'))
    b.bind_run_dir(tmp_path / "b")
    assert b.model_stamp != a.model_stamp


def test_stages_writing_the_same_column_are_refused():
    from curate.pipeline.running.config import load_config
    from curate.pipeline.errors import ConfigError

    base = {"name": "x", "out": "runs/x", "inputs": [{"path": "data/x.jsonl"}]}
    cases = [
        [{"kind": "quality", "model": "models/quality_a.bin"}, {"kind": "quality", "name": "q2", "model": "models/quality_b.bin"}],
        [{"kind": "langid"}, {"kind": "langid", "name": "lid2"}],
        [{"kind": "quality", "model": "m1/quality_a.bin", "bucket": False},
         {"kind": "quality", "name": "q2", "model": "m2/quality_a.bin", "bucket": False}],
        [{"kind": "domain"}, {"kind": "domain", "name": "d2"}],
    ]
    for stages in cases:
        with pytest.raises(ConfigError, match="stage '(q2|lid2|d2)' writes column") as e:
            load_config(data={**base, "stages": stages})
        assert e.value.field == "stages"
    # Distinct columns pass: the second quality stage has its own scorer and no bucket.
    load_config(data={**base, "stages": [{"kind": "quality", "model": "models/quality_a.bin"},
                                         {"kind": "quality", "name": "q2", "model": "models/quality_b.bin", "bucket": False}]})


def test_domain_rule_errors_name_the_bad_field():
    with pytest.raises(ValueError, match="^text: domain x"):
        DomainRule("x", url=["ok"], text=["("])
    with pytest.raises(ValueError, match="^url: domain x"):
        DomainRule("x", url=["("])
    # DomainRule objects go to the tagger directly.
    assert RuleTagger([DomainRule("legal", url=["common-licenses/"])]).tag_one("t", None, "file:///common-licenses/MIT") == "legal"


@pytest.mark.parametrize("loss", ["softmax", "ova", "hs"])
def test_the_predictor_predicts_what_the_model_does_from_a_projected_matrix(tmp_path, loss):
    """`ft.load_predictor` folds the output matrix into the input matrix (rows x labels): every
    label's probability on unseen text equals fastText's own on the file as saved, to float32
    rounding, for each of fastText's supervised losses; the model `load_model` serves is untouched."""
    from curate.scorers import ft

    seeds = [(label, t) for label, get in SOURCES.items() for t in get()[:60]]
    path = tmp_path / "domain_p.bin"
    model = ft.train_on_examples(seeds, tmp_path, seed=0, loss=loss, **asdict(FastTextParams(epoch=10, bucket=20_000)))
    model.save_model(str(path))
    plain, predictor = ft.load_model(path), ft.load_predictor(path)
    assert predictor is not plain and ft.load_predictor(path) is predictor and ft.loads_of(path) == 2
    n_labels = len(plain.get_labels())
    assert plain.get_input_matrix().shape[1] == 100
    assert predictor.get_input_matrix().shape == (plain.get_input_matrix().shape[0], n_labels)
    fresh = [ft.one_line(t) for get in SOURCES.values() for t in get()[60:80]] + ["", "word", "__label__code x"]
    want_l, want_p = plain.predict(fresh, k=-1)
    got_l, got_p = predictor.predict(fresh, k=-1)
    for wl, wp, gl, gp in zip(want_l, want_p, got_l, got_p):
        want, got = dict(zip(wl, wp)), dict(zip(gl, gp))
        assert set(want) == set(got) and all(abs(want[k] - got[k]) <= 1e-6 for k in want)
    assert [ls[:1] for ls in want_l] == [ls[:1] for ls in got_l]  # the same top label


def test_a_model_with_no_fewer_labels_than_dimensions_is_not_projected(quality_model, tmp_path):
    """A projected model saved (2 labels, dim 2, identity output) comes back as saved, predicting as before."""
    from curate.scorers import ft

    path, _ = quality_model
    saved = tmp_path / "quality_projected.bin"
    ft.load_predictor(path).save_model(str(saved))
    again = ft.load_predictor(saved)
    assert again.get_input_matrix().shape[1] == 2 and np.array_equal(again.get_output_matrix(), np.eye(2))
    texts = [ft.one_line(t) for t in pydoc_chunks(220)[200:]]
    assert np.array_equal(ft.label_probability(again, texts, "__label__pos"),
                          ft.label_probability(ft.load_predictor(path), texts, "__label__pos"))


def test_training_that_diverges_is_run_again_at_a_lower_learning_rate(tmp_path):
    """Labels that mean nothing, at lr 10, blow fastText's weights up (or stop it with NaN): the run
    is tried again at half the rate, and the model says the rate it was trained at."""
    import random

    from curate.scorers import ft

    rng = random.Random(0)
    examples = [(rng.choice("abc"), t) for t in pydoc_chunks(60) + stdlib_code(60)]
    ft.write_training_file(tmp_path / "train.txt", examples)
    model = ft.train_supervised(tmp_path / "train.txt", lr=10.0, epoch=50, wordNgrams=1, dim=100, bucket=20_000)
    assert ft.trained_lr(model) < 10.0 and not ft.diverged(model)
    assert "diverged at lr 10;" in ft.lr_warning(model, 10.0)
    assert ft.lr_warning(model, ft.trained_lr(model)) is None
    # The same model with its input rows scaled by 1e7 is one that blew up.
    model.set_matrices(model.get_input_matrix() * 1e7, model.get_output_matrix())
    assert ft.diverged(model)


def test_the_same_examples_and_seed_give_the_same_model_in_one_process(tmp_path):
    """fastText leaves 90% of a new input matrix as the allocator returns it; after other models
    were trained and freed in the process that memory held their weights, and the same call gave
    another model. Training with zeroed allocations gives the same one every time."""
    from curate.scorers import ft

    examples = [("pos", t) for t in pydoc_chunks(60)] + [("neg", t) for t in stdlib_code(60)]
    ft.write_training_file(tmp_path / "train.txt", examples)
    train = lambda **kw: ft.train_supervised(tmp_path / "train.txt", epoch=5, bucket=20_000, **kw)  # noqa: E731
    first = train(seed=0).get_input_matrix()
    for seed in (1, 2):  # other models, made and freed in between
        train(seed=seed)
    assert np.array_equal(train(seed=0).get_input_matrix(), first)
