"""The plan sampler: deterministic greedy interleave, exact resume, epochs, and clear refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from curate.records.plan import Plan
from curate.training.data import PlanSampler, load_groups
from curate.stages.tokens.megatron import read_indexed_dataset
from curate.training.indexed import PackedRows
from curate.training.synthetic import markov_docs, synthetic_run, write_tokens


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("run")
    plan = synthetic_run(d, seq_len=16, vocab_size=100, docs_per_group=60, mean_len=30,
                         phases=[{"web": 0.6, "code": 0.25, "qa": 0.15}, {"web": 0.2, "code": 0.3, "qa": 0.5}],
                         boundaries=[16 * 1000, 16 * 1600])
    return d, plan


def _sampler(run, seed=0):
    d, plan = run
    return PlanSampler(Plan.from_dict(plan), load_groups(d / "tokens", ["code", "qa", "web"]), seed=seed,
                       holdout_rows=4)


def test_token_files_read_back(run, tmp_path):
    d, _ = run
    docs = markov_docs(5, 100, seed=9)
    write_tokens(tmp_path, {"g": docs}, seq_len=16, vocab_size=100)
    ds = read_indexed_dataset(tmp_path / "tokens" / "g" / "tokens")
    assert len(ds) == 5 and all(np.array_equal(ds[i][:-1], docs[i]) and ds[i][-1] == 2 for i in range(5))
    rows = PackedRows(tmp_path / "tokens" / "g")
    toks, segs = rows.get(np.arange(rows.n_rows))
    flat = toks.reshape(-1)[segs.reshape(-1) > 0]
    assert np.array_equal(flat, np.concatenate([ds[i] for i in range(5)]))


def test_every_prefix_tracks_the_weights(run):
    s = _sampler(run)
    _, plan = run
    for ph in plan["phases"]:
        n_rows = (ph["end_token"] - ph["start_token"]) // 16
        counts = {g: 0 for g in ph["weights"]}
        for n in range(1, n_rows + 1):
            (g, _), = s.next_indices(1)[0]
            counts[g] += 1
            # Greedy deficit interleave: every prefix within one row of weight * n.
            assert all(abs(counts[k] - w * n) <= 1.0 + 1e-9 for k, w in ph["weights"].items())
        real = s.realised()[plan["phases"].index(ph)]["realised"]
        assert all(abs(real[g] - w) <= 0.01 for g, w in ph["weights"].items())


def test_state_dict_round_trip_gives_the_same_next_batches(run):
    a = _sampler(run, seed=3)
    for _ in range(37):
        a.next_batch(7)
    state = json.loads(json.dumps(a.state_dict()))  # survives serialisation
    b = _sampler(run, seed=3)
    b.load_state_dict(state)
    for _ in range(120):  # crosses the phase boundary and epoch wraps
        x, y = a.next_batch(7), b.next_batch(7)
        assert x.groups == y.groups and x.phase == y.phase
        assert np.array_equal(x.tokens, y.tokens) and np.array_equal(x.segs, y.segs)
    other = _sampler(run, seed=4)
    assert [g for g, _ in other.next_indices(50)[0]] == [g for g, _ in _sampler(run, seed=3).next_indices(50)[0]]
    with pytest.raises(ValueError, match="different seed"):
        other.load_state_dict(state)


def test_epochs_wrap_with_a_fresh_permutation_and_no_repeats_within_an_epoch(run):
    s = _sampler(run)
    n = s.n_train["qa"]
    drawn = []
    while len(drawn) < 2 * n:
        drawn += [r for g, r in s.next_indices(1)[0] if g == "qa"]
    first, second = drawn[:n], drawn[n : 2 * n]
    assert sorted(first) == list(range(n)) and sorted(second) == list(range(n))
    assert first != second
    held = set(range(n, s.groups["qa"].n_rows))
    assert held and not held & set(drawn), "held-out rows are never trained on"


def test_plan_asking_too_many_epochs_is_refused_naming_the_group(run):
    d, plan = run
    tight = json.loads(json.dumps(plan))
    for g in tight["groups"]:
        if g["name"] == "qa":
            g["max_epochs"] = 0.5
    s = PlanSampler(Plan.from_dict(tight), load_groups(d / "tokens", ["code", "qa", "web"]), holdout_rows=4)
    with pytest.raises(ValueError, match="group 'qa'"):
        s.check_epochs()


def test_missing_group_and_seq_len_mismatch_fail_clearly(run, tmp_path):
    d, plan = run
    with pytest.raises(FileNotFoundError, match="group 'nope'"):
        load_groups(d / "tokens", ["web", "nope"])
    bad = dict(plan, seq_len=32)
    with pytest.raises(ValueError, match="seq_len"):
        PlanSampler(Plan.from_dict(bad), load_groups(d / "tokens", ["code", "qa", "web"]))


def test_reads_the_packers_own_files(tmp_path):
    """Files written by stages/tokens/megatron.py and stages/tokens/packing.py read back through training/indexed.py."""
    from curate.stages.tokens.megatron import IndexedDatasetWriter
    from curate.stages.tokens.packing import PackConfig, place, write_rows

    docs = [np.append(d, 2) for d in markov_docs(40, 100, seed=11, mean_len=12)]
    with IndexedDatasetWriter(tmp_path / "tokens", np.uint16) as w:
        w.add(np.concatenate(docs), [len(d) for d in docs])
    ds = read_indexed_dataset(tmp_path / "tokens")
    assert len(ds) == 40 and all(np.array_equal(ds[i], docs[i]) for i in range(40))
    cfg = PackConfig(seq_len=64, packing="best-fit")
    stats = write_rows(ds, place(ds.lengths, cfg), cfg, tmp_path, pad_id=0)
    meta = {"seq_len": 64, "dtype": "uint16", "vocab_size": 100, **stats}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    rows = PackedRows(tmp_path)
    toks, segs = rows.get(np.arange(rows.n_rows))
    pieces = sorted(tuple(t[s == k]) for t, s in zip(toks, segs) for k in range(1, int(s.max()) + 1))
    whole = sorted(tuple(d) for d in docs if len(d) <= 65)
    assert set(whole) <= set(pieces), "every document that fits a row comes back whole as one segment"


def test_a_dotted_prefix_keeps_its_dot(tmp_path):
    """`tokens.v2` means tokens.v2.bin / tokens.v2.idx, not tokens.bin / tokens.idx."""
    from curate.training.synthetic import write_indexed

    docs = markov_docs(7, 100, seed=5)
    write_indexed(tmp_path / "tokens.v2", docs, np.uint16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tokens.v2.bin", "tokens.v2.idx"]
    ds = read_indexed_dataset(tmp_path / "tokens.v2")
    assert len(ds) == 7 and all(np.array_equal(ds[i], docs[i]) for i in range(7))


def test_a_plan_whose_cap_binds_on_the_catalogs_count_is_not_refused_for_the_held_out_rows(run):
    # The planner caps epochs over the group's tokens as the catalog counts them; pack's eval
    # slice and the sampler's holdout rows leave fewer rows for training. A cap that binds exactly
    # must not fail training for those rows, while a plan made on far more data still does.
    d, plan = run
    groups = load_groups(d / "tokens", ["code", "qa", "web"])
    base = PlanSampler(Plan.from_dict(plan), groups, holdout_rows=4)
    need, rows = base.planned_rows()["qa"], base.n_train["qa"]

    def sampler(counted_rows: float) -> PlanSampler:
        p = json.loads(json.dumps(plan))
        for g in p["groups"]:
            if g["name"] == "qa":
                g["available_tokens"] = tokens = int(counted_rows * base.seq_len)
                g["max_epochs"] = (need - len(base.phases)) / (tokens / base.seq_len)  # binds on the plan's count
        return PlanSampler(Plan.from_dict(p), groups, holdout_rows=4)

    sampler(rows * 1.1).check_epochs()  # the held-out rows explain the difference
    with pytest.raises(ValueError, match="group 'qa'"):
        sampler(rows * 2.0).check_epochs()  # a plan for other data
