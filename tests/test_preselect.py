"""PreSelect: predictive strength on hand-made ladders, label selection, and a classifier trained
from a real ladder of tiny models that ranks target-domain documents first on held-out data."""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import pytest

from curate.scorers.preselect import predictive_strength, select_labels


PERF = [0.2, 0.5, 0.9]  # model 2 is the best on the target, model 0 the worst


@pytest.mark.parametrize("bpb, expected", [
    ([3.0, 2.0, 1.0], 1.0),        # the better the model, the lower its bpb: every pair agrees
    ([1.0, 2.0, 3.0], 0.0),        # exactly reversed
    ([2.0, 1.0, 3.0], 1 / 3),      # only (0, 1) agrees
    ([2.0, 2.0, 1.0], 2 / 3),      # a bpb tie is not concordant: (0, 1) counts 0
    ([1.0, 1.0, 1.0], 0.0),        # a document that separates no model
])
def test_strength_on_a_hand_made_ladder(bpb, expected):
    assert predictive_strength(np.array([bpb]), PERF)[0] == pytest.approx(expected)


def test_performance_ties_leave_the_pair_out():
    # Models 0 and 1 tie on the target: only (0, 2) and (1, 2) are counted.
    s = predictive_strength(np.array([[3.0, 2.0, 1.0], [3.0, 1.0, 2.0], [1.0, 3.0, 2.0]]), [0.5, 0.5, 0.9])
    assert s.tolist() == pytest.approx([1.0, 0.5, 0.5])
    with pytest.raises(ValueError, match="same performance"):
        predictive_strength(np.ones((1, 3)), [0.3, 0.3, 0.3])
    with pytest.raises(ValueError, match="one column per performance"):
        predictive_strength(np.ones((2, 3)), [0.1, 0.2])
    with pytest.raises(ValueError, match="at least 2 models"):
        predictive_strength(np.ones((2, 1)), [0.1])


def test_strength_is_concordant_pairs_over_all_pairs():
    """Against a plain double loop over C(N, 2), and Kendall's tau when nothing ties."""
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    perf = rng.permutation(6).astype(float)
    bpb = rng.normal(size=(200, 6))
    s = predictive_strength(bpb, perf)
    for d in range(0, 200, 17):
        pairs = list(itertools.combinations(range(6), 2))
        agree = sum((perf[i] > perf[j]) == (bpb[d, i] < bpb[d, j]) for i, j in pairs)
        assert s[d] == pytest.approx(agree / len(pairs))
        tau = kendalltau(perf, -bpb[d]).statistic
        assert s[d] == pytest.approx((tau + 1) / 2)


def test_labels_take_s1_positives_and_lowest_s_negatives():
    s = np.array([1.0, 0.0, 1 / 3, 1.0, 2 / 3, 0.0, 1.0, 1 / 3, 0.0, 1.0])
    labels = select_labels(s, [100] * len(s), min_positives=2, length_bins=1)
    assert labels.positives == [0, 3, 6, 9]
    # As many negatives as positives, from S = 0 upward: the three zeros, then one S = 1/3.
    assert len(labels.negatives) == 4 and {1, 5, 8} < set(labels.negatives)
    assert set(labels.negatives) - {1, 5, 8} <= {2, 7}
    # Too few perfect documents: the top S (ties at the cut included), never S = 0.
    few = select_labels(np.array([1.0, 2 / 3, 2 / 3, 0.0, 1 / 3, 0.0]), [10] * 6, min_positives=2, length_bins=1)
    assert few.positives == [0, 1, 2] and few.info["positive_cut"] == pytest.approx(2 / 3)
    assert set(few.negatives) == {3, 5, 4}


def test_length_balancing_removes_the_length_signal():
    rng = np.random.default_rng(1)
    n = 4000
    lengths = rng.integers(100, 20000, size=n)
    # Short documents are S = 1 far more often: a length-biased labelling.
    s = np.where(rng.random(n) < np.where(lengths < 5000, 0.6, 0.1), 1.0, rng.choice([0.0, 1 / 3, 2 / 3], size=n))
    biased = select_labels(s, lengths, min_positives=10, length_bins=1)
    balanced = select_labels(s, lengths, min_positives=10, length_bins=10)
    assert biased.info["length_auc_after"] < 0.3  # positives are much shorter
    assert abs(balanced.info["length_auc_after"] - 0.5) < 0.05
    assert len(balanced.positives) == len(balanced.negatives) > 100
    assert all(s[i] == 1.0 for i in balanced.positives)
    assert not set(balanced.positives) & set(balanced.negatives)


# ---------------------------------------------------------------------------------- a real ladder
def _pools() -> tuple[list[str], list[str]]:
    """Python source (the target domain) and pydoc prose, as documents of 400-800 characters with
    the same spread of lengths in both (so the domain, not length, tells them apart)."""
    import sysconfig
    from pathlib import Path

    from test_scorers_corpus import pydoc_chunks

    root = Path(sysconfig.get_paths()["stdlib"])
    code = [c for p in sorted(root.glob("*.py")) for c in p.read_text(errors="replace").split("\n\n\n") if len(c) >= 800]
    prose = [t for t in pydoc_chunks(10_000, chars=800) if len(t) >= 800]
    return [[t[:400 + (i * 37) % 401] for i, t in enumerate(pool)] for pool in (code, prose)]


@contextlib.contextmanager
def _one_torch_thread():
    """Train and score in this process on one torch thread: on a loaded 2-core machine a second
    OpenMP thread mostly waits for the first (measured 4x slower), and Ray's actors use one too."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    with _one_torch_thread():
        yield


@pytest.fixture(scope="module")
def ladder_run(ray_session, tmp_path_factory):
    """A run of code and prose documents, and a ladder of checkpoints of one continued-pretraining
    run: a tiny model trained on prose, then continued on Python source (the target domain) for 0,
    25 and 75 more steps. Its code ability rises along the ladder while prose is forgotten, so code
    documents rank the checkpoints as the target does and prose documents rank them in reverse.

    (Training lengths from scratch would lower every document's bits per byte at once at this scale:
    a few dozen steps mostly learn which tokens are common, so every document would be "predictive".)
    """
    import json

    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline
    from tinylm import train_sp, train_tiny

    d = tmp_path_factory.mktemp("preselect")
    code, prose = _pools()
    split = {k: (code[k::4], prose[k::4]) for k in range(4)}  # 0 ladder training, 1 corpus, 2 target, 3 held out
    (code_tr, prose_tr), (code_c, prose_c) = split[0], split[1]
    sp = train_sp(code_tr + prose_tr, d / "sp.model")
    with _one_torch_thread():
        base = train_tiny(prose_tr, sp, d / "step_0", steps=150, rows=8)
        ladder = [base] + [train_tiny(code_tr, sp, d / f"step_{n}", steps=n, rows=8, seed=1, base=base)
                           for n in (25, 75)]
    corpus = [(t, "python") for t in code_c[:160]] + [(t, "pydoc") for t in prose_c[:160]]
    (d / "corpus.jsonl").write_text("".join(json.dumps({"text": t, "source": s}) + "\n" for t, s in corpus))
    (d / "target.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in split[2][0][:40]))
    run = d / "run"
    run_pipeline(load_config(data={"name": "ps", "out": str(run), "inputs": [{"path": str(d / "corpus.jsonl")}]}),
                 quiet=True)
    return run, ladder, d / "target.jsonl", split[3]


def test_classifier_from_a_real_ladder_ranks_the_target_domain_first(ladder_run, one_thread):
    import pyarrow.parquet as pq

    from curate.pipeline.catalog.db import query
    from curate.pipeline.commands.preselect import train_preselect
    from curate.scorers.ft import FastTextParams
    from curate.scorers.quality import QualityScorer, auc
    from curate.stages.score.annotate import QualityConfig, QualityStage
    from test_scorers_corpus import doc_table

    run, ladder, target, (code_ho, prose_ho) = ladder_run
    # PreSelect's 5 epochs at lr 0.1 are made for ~10^5 labelled documents; on the ~200 here
    # fastText barely leaves the prior, so this test trains 40 epochs at lr 0.25. The CLI test
    # below runs with PreSelect's settings.
    meta = train_preselect(str(run), [str(m) for m in ladder], target_set=[str(target)], sample=1000,
                           min_positives=20, length_bins=5, holdout=0.2, seed=1, block=512, stride=256,
                           device="cpu", params=FastTextParams(epoch=40, lr=0.25, bucket=20_000))
    perf = meta["performance"]
    assert perf[0] < perf[1] < perf[2], perf  # minus bits per byte on held-out code: rises along the ladder
    lab = meta["labels"]
    print(f"labels: {lab}")
    n_docs = query(str(run), "SELECT count(*) AS n FROM docs").column("n")[0].as_py()
    assert lab["documents"] == n_docs > 200 and lab["positives"] == lab["negatives"] >= 50
    # Positives are the documents whose bpb ranks the ladder as the target does: code, not prose.
    scores = pq.read_table(run / "models" / "quality_preselect.scores.parquet").to_pydict()
    rows = query(str(run), "SELECT id, source FROM docs").to_pydict()
    source = dict(zip(rows["id"], rows["source"]))
    pos = [source[i] for i, lab_ in zip(scores["id"], scores["label"]) if lab_ == 1]
    print(f"positives: {pos.count('python')} Python source, {pos.count('pydoc')} pydoc prose")
    assert pos.count("python") >= 0.8 * len(pos)
    assert meta["heldout"]["n_pos"] >= 10 and meta["heldout"]["auc"] > 0.5  # better than chance on its held-out split
    # On documents neither the ladder, the sample nor the classifier saw, code ranks above prose.
    held_code, held_prose = code_ho[:100], prose_ho[:100]
    scorer = QualityScorer(run / "models" / "quality_preselect.bin")
    s = scorer.scores(held_code + held_prose)
    held_auc = auc(s, [1] * len(held_code) + [0] * len(held_prose))
    print(f"PreSelect held-out AUC, Python source vs pydoc prose: {held_auc:.3f} (training split {meta['heldout']['auc']:.3f})")
    # 0.97 here, the same in every run since fastText trains on zeroed memory (it varied over
    # 0.77-0.98 from process to process before: scorers/ft.zeroed_allocations). A classifier that
    # had not learnt code from the ladder's ranking sits near 0.5, with a standard deviation of
    # about 0.04 for 100 + 100 documents, so 0.7 is five of those above chance.
    assert held_auc >= 0.7
    # The ordinary quality stage scores with it: quality_preselect and character-mass buckets.
    stage = QualityStage(QualityConfig(model=str(run / "models" / "quality_preselect.bin")))
    out = stage.process(doc_table(held_code[:10] + held_prose[:10])).kept
    assert "quality_preselect" in out.column_names
    assert set(out.column("quality_bucket").to_pylist()) <= {1, 2, 3, 4, 5}
    assert len(meta["bucket_thresholds"]) == 4 and meta["bucket_quantiles"][-1] == 0.9


def test_cli_with_given_performance(ladder_run, one_thread, capsys):
    import json

    from curate.pipeline.cli import main
    from curate.scorers import ft

    run, ladder, _, _ = ladder_run
    argv = ["train-preselect", str(run), "--ladder", *map(str, ladder), "--name", "given", "--sample", "60",
            "--min-positives", "8", "--length-bins", "2", "--holdout", "0.25", "--device", "cpu", "--bucket", "20000"]
    assert main(argv + ["--perf", "3.1", "2.4", "1.2", "--lower-is-better"]) == 0
    out = capsys.readouterr().out
    assert "held-out AUC" in out and (run / "models" / "quality_given.bin").is_file()
    # PreSelect's fastText settings by default, no subwords (a saved model keeps its arguments but
    # lr, which the metadata has).
    args = ft.load_model(run / "models" / "quality_given.bin").f.getArgs()
    assert (args.wordNgrams, args.dim, args.epoch, args.minn, args.maxn) == (2, 100, 5, 0, 0)
    meta = json.loads((run / "models" / "quality_given.json").read_text())
    assert meta["performance"] == [-3.1, -2.4, -1.2]
    assert meta["params"]["lr"] == 0.1 and not any("diverged" in w for w in meta["warnings"])  # not lowered
    assert main(argv + ["--perf", "0.1", "0.2"]) == 2
    assert "2 numbers for 3 ladder models" in capsys.readouterr().err
    assert main(argv[:3] + [str(ladder[0]), "--perf", "1"]) == 2
