"""Deduplication stage logic, in-process (`LocalExecutor`, no Ray)."""

from __future__ import annotations

import glob
import random
import shutil
import sysconfig
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.stages import shardio
from curate.stages.base import GlobalContext, LocalExecutor
import dedup_plant as plant
from curate.stages.dedup import ExactDedup, ExactDedupConfig, MinHashDedup, MinHashDedupConfig, minhash
from curate.stages.dedup.common import normalize_text
from curate.stages.dedup.components import connected_components, write_edges


def real_texts() -> list[str]:
    import pydoc_data.topics as topics

    stdlib = sorted(glob.glob(str(Path(sysconfig.get_paths()["stdlib"]) / "*.py")))
    return [topics.topics[k] for k in sorted(topics.topics)] + [Path(p).read_text(errors="replace") for p in stdlib]


@pytest.fixture(scope="module")
def planted() -> list[dict]:
    """~2000 documents of real text: ~1400 bases and altered copies of about a third of them."""
    return plant.plant(plant.base_documents(real_texts(), 1400), dup_share=0.3, seed=1)


def run_stage(stage, inputs: list[Path], root: Path, executor=None) -> list[Path]:
    d = root / stage.name
    ctx = GlobalContext(d, d / "_work", root / "rejected" / stage.name, executor or LocalExecutor(), "cfg-1")
    stage.run(inputs, ctx)
    return sorted(d.glob("*.parquet"))


def outputs(root: Path, name: str) -> dict:
    """Everything a stage wrote, in a canonical form for comparisons."""
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((root / name).glob("*.parquet"))])
    rej = pa.concat_tables([pq.read_table(p) for p in sorted((root / "rejected" / name).glob("*.parquet"))])
    cols = [c for c in ("id", "dup_cluster", "dup_cluster_size") if c in kept.column_names]
    return {
        "kept": sorted(zip(*[kept.column(c).to_pylist() for c in cols])),
        "rejected": sorted(zip(*[rej.column(c).to_pylist() for c in ("id", "reason", "keeper_id")])),
    }


# ---------------------------------------------------------------- signatures


@pytest.mark.parametrize("kind,ngram", [("word", 5), ("word", 1), ("char", 5)])
def test_signatures_equal_datasketch(kind, ngram):
    from datasketch import MinHash

    texts = real_texts()[:40] + ["", "two words", "x"]
    for num_perm, seed in ((128, 1), (64, 7)):
        spec = minhash.ShingleSpec(kind=kind, ngram=ngram, hash="sha1")
        a, b = minhash.permutations(num_perm, seed)
        sig, counts = minhash.signatures(texts, spec, a, b)
        assert sig.dtype == np.uint32 and sig.shape == (len(texts), num_perm)
        for i, t in enumerate(texts):
            m = MinHash(num_perm=num_perm, seed=seed)
            sh = minhash.shingles(t, spec)
            m.update_batch([s.encode("utf-8") for s in sh])
            assert len(sh) == counts[i]
            np.testing.assert_array_equal(sig[i], m.hashvalues, err_msg=f"doc {i}")


def test_fast_hash_estimates_jaccard():
    texts = real_texts()[:30]
    spec = minhash.ShingleSpec(hash="xxh")
    a, b = minhash.permutations(256, 1)
    edited = [t.replace("the ", "a ", 3) for t in texts]
    s1, _ = minhash.signatures(texts, spec, a, b)
    s2, _ = minhash.signatures(edited, spec, a, b)
    for i in range(len(texts)):
        x, y = set(minhash.shingles(texts[i], spec)), set(minhash.shingles(edited[i], spec))
        true = len(x & y) / len(x | y)
        assert abs(minhash.estimated_jaccard(s1[i : i + 1], s2[i : i + 1])[0] - true) < 0.15


@pytest.mark.parametrize("mode,kind", [("xxh", "word"), ("xxh", "char"), ("sha1", "word")])
def test_signature_independent_of_batch(mode, kind):
    texts = real_texts()[:25] + ["", "short text", "one"]
    spec = minhash.ShingleSpec(kind=kind, hash=mode, ngram=5)
    a, b = minhash.permutations(64, 3)
    together, _ = minhash.signatures(texts, spec, a, b)
    alone = np.vstack([minhash.signatures([t], spec, a, b)[0] for t in texts])
    np.testing.assert_array_equal(together, alone)
    assert (together[-3] == minhash.EMPTY).all() and not (together[-2] == minhash.EMPTY).any()


def test_lsh_params_come_from_datasketch():
    from datasketch.lsh import _optimal_param

    assert MinHashDedupConfig().lsh_params() == _optimal_param(0.8, 128, 0.1, 0.9)
    assert MinHashDedupConfig(false_negative_weight=0.5).lsh_params() == _optimal_param(0.8, 128, 0.5, 0.5)
    assert MinHashDedupConfig(bands=4, rows=8).lsh_params() == (4, 8)


@pytest.mark.parametrize(
    "kwargs,field",
    [({"threshold": 1.2}, "threshold"), ({"shingle": "line"}, "shingle"), ({"hash": "md5"}, "hash"),
     ({"bands": 20, "rows": 10}, "bands"), ({"bands": 3}, "bands"), ({"ngram": 0}, "ngram")],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        MinHashDedupConfig(**kwargs)


@pytest.mark.parametrize("kwargs,field", [({"num_partitions": -1}, "num_partitions"), ({"num_partitions": 70000}, "num_partitions"),
                                          ({"keeper_column": 3}, "keeper_column"), ({"batch_size": 0}, "batch_size")])
def test_both_dedup_configs_check_shared_fields_alike(kwargs, field):
    for config in (ExactDedupConfig, MinHashDedupConfig):
        with pytest.raises(ValueError, match=field):
            config(**kwargs)


def test_auto_partitions_follow_documents_not_parts():
    from curate.stages.dedup.output import DOCS_PER_PARTITION, auto_partitions

    assert auto_partitions(2, 10) == 4  # work for several workers even on a tiny input
    assert auto_partitions(80, 1_300_000) == -(-1_300_000 // DOCS_PER_PARTITION)  # not 80
    assert auto_partitions(3, 10**9) == 4  # never more than the parts, unless to reach 4
    assert auto_partitions(10_000, 10**12) == 256


def test_normalization():
    assert normalize_text("  Hello,\tWORLD!\n") == "hello world"
    assert normalize_text("A-b", punctuation=False) == "a-b"
    assert normalize_text("Ａ", nfkc=True) == "a"


# ---------------------------------------------------------------- connected components


@pytest.mark.parametrize("in_memory", [False, True], ids=["distributed", "in_memory"])
def test_components_match_union_find(tmp_path, in_memory):
    rng = np.random.default_rng(3)
    n = 3000
    x = rng.integers(0, n, 1500)
    y = rng.integers(0, n, 1500)
    x = np.r_[x, np.arange(2000, 2599)]  # and a long path, the worst case for label propagation
    y = np.r_[y, np.arange(2001, 2600)]
    for s in range(3):
        write_edges(x[s::3], y[s::3], tmp_path / "edges", s, 4)
    offsets = np.array([0, n])
    # The same graph both ways: rounds of large/small star, or one task labelling it in memory.
    label_dir, rounds = connected_components(LocalExecutor(), tmp_path / "edges", 3, 4, offsets, tmp_path / "cc", "fp",
                                             "c", n_edges=len(x), in_memory_edges=len(x) if in_memory else 0)
    t = pa.concat_tables([pq.read_table(p) for p in sorted(label_dir.glob("to-*/*.parquet"))])
    got = dict(zip(t.column("uid").to_pylist(), t.column("label").to_pylist()))
    parent = list(range(n))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in zip(x.tolist(), y.tolist()):
        ra, rb = find(a), find(b)
        parent[max(ra, rb)] = min(ra, rb)
    nodes = {int(v) for a, b in zip(x, y) if a != b for v in (a, b)}
    assert set(got) == nodes
    assert all(got[v] == find(v) for v in nodes)
    assert rounds == 0 if in_memory else 0 < rounds < 40


# ---------------------------------------------------------------- exact dedup


def test_exact_dedup_keeper_rule(tmp_path):
    docs = [("d3", "Same  text."), ("d1", "same text."), ("d2", "SAME TEXT."), ("u1", "other"), ("d0", "same text!")]
    t = pa.table({"id": [d for d, _ in docs], "text": [x for _, x in docs], "source": ["s"] * 5,
                  "url": pa.nulls(5, pa.string()), "date": pa.nulls(5, pa.timestamp("us", tz="UTC")),
                  "n_chars": [len(x) for _, x in docs], "quality_x": [0.1, 0.2, 0.9, 0.5, 0.9]})
    shardio.write_parquet(tmp_path / "in" / "part-00000-000.parquet", t.slice(0, 3))
    shardio.write_parquet(tmp_path / "in" / "part-00001-000.parquet", t.slice(3))
    inputs = sorted((tmp_path / "in").glob("*.parquet"))
    # No quality column: the smallest id keeps; "!" differs unless punctuation is ignored.
    run_stage(ExactDedup(ExactDedupConfig(keeper_column=""), "ex"), inputs, tmp_path / "a")
    out = outputs(tmp_path / "a", "ex")
    assert out["kept"] == [("d0",), ("d1",), ("u1",)]
    assert out["rejected"] == [("d2", "exact_duplicate", "d1"), ("d3", "exact_duplicate", "d1")]
    run_stage(ExactDedup(ExactDedupConfig(keeper_column="", punctuation=True), "ex"), inputs, tmp_path / "b")
    assert outputs(tmp_path / "b", "ex")["rejected"] == [
        ("d1", "exact_duplicate", "d0"), ("d2", "exact_duplicate", "d0"), ("d3", "exact_duplicate", "d0")]
    # With the quality column: the highest quality keeps, ties go to the smallest id (d0 < d2).
    run_stage(ExactDedup(ExactDedupConfig(punctuation=True), "ex"), inputs, tmp_path / "c")
    assert outputs(tmp_path / "c", "ex")["rejected"] == [
        ("d1", "exact_duplicate", "d0"), ("d2", "exact_duplicate", "d0"), ("d3", "exact_duplicate", "d0")]
    t2 = t.set_column(6, "quality_x", pa.array([0.1, 0.2, 0.95, 0.5, 0.9]))
    shardio.write_parquet(tmp_path / "in" / "part-00000-000.parquet", t2.slice(0, 3))
    shardio.write_parquet(tmp_path / "in" / "part-00001-000.parquet", t2.slice(3))
    run_stage(ExactDedup(ExactDedupConfig(punctuation=True), "ex"), inputs, tmp_path / "c")  # inputs changed: reruns
    assert outputs(tmp_path / "c", "ex")["rejected"] == [
        ("d0", "exact_duplicate", "d2"), ("d1", "exact_duplicate", "d2"), ("d3", "exact_duplicate", "d2")]
    marker = shardio.read_marker(tmp_path / "c" / "ex", "part-00001-000")
    assert marker["counts"]["in"] == 2 and marker["counts"]["kept"] + marker["counts"]["rejected"] == 2


def test_exact_dedup_keeper_ids_are_exact(planted, tmp_path):
    rng = random.Random(0)
    recs = [dict(r) for r in planted[:600]]
    copies = [dict(r, id=f"copy-{i:04d}", text="  " + r["text"].upper()) for i, r in enumerate(rng.sample(recs, 80))]
    recs += copies
    inputs = plant.write_parts(recs, tmp_path / "in", 3)
    run_stage(ExactDedup(ExactDedupConfig(), "ex"), inputs, tmp_path)
    out = outputs(tmp_path, "ex")
    by_norm: dict[str, list[str]] = {}
    for r in recs:
        by_norm.setdefault(normalize_text(r["text"], punctuation=False), []).append(r["id"])
    expect = sorted((i, "exact_duplicate", min(g)) for g in by_norm.values() for i in g if i != min(g))
    assert out["rejected"] == expect
    assert len(out["kept"]) + len(out["rejected"]) == len(recs)


def test_exact_dedup_rebuilds_a_deleted_shard(planted, tmp_path):
    recs = [dict(r) for r in planted[:300]]
    recs += [dict(r, id=f"copy-{i:04d}") for i, r in enumerate(recs[:60])]
    inputs = plant.write_parts(recs, tmp_path / "in", 3)
    kept = run_stage(ExactDedup(ExactDedupConfig(), "ex"), inputs, tmp_path)
    want = outputs(tmp_path, "ex")
    assert want["rejected"] and len(kept) == 3
    for gone in (kept[1], tmp_path / "rejected" / "ex" / kept[2].name):
        gone.unlink()
        assert run_stage(ExactDedup(ExactDedupConfig(), "ex"), inputs, tmp_path) == kept
        assert gone.exists() and outputs(tmp_path, "ex") == want


# ---------------------------------------------------------------- fuzzy dedup


def test_planted_near_duplicates_recall_precision(planted, tmp_path):
    assert 1800 <= len(planted) <= 2600
    inputs = plant.write_parts(planted, tmp_path / "in", 4)
    stage = MinHashDedup(MinHashDedupConfig(), "fuzzy")
    run_stage(stage, inputs, tmp_path)
    clusters = plant.cluster_of_every_doc(tmp_path / "fuzzy", [tmp_path / "rejected" / "fuzzy"])
    assert len(clusters) == len(planted)
    truth = plant.jaccard_pairs([r["text"] for r in planted], MinHashDedupConfig().spec(), 0.8)
    scores = plant.pair_scores([clusters[r["id"]] for r in planted], truth)
    assert scores["true_pairs"] > 500
    assert scores["recall"] >= 0.95, scores
    assert scores["precision"] >= 0.95, scores
    # Cluster id = smallest member id; kept doc = the keeper; singletons carry their own id.
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "fuzzy").glob("*.parquet"))])
    members: dict[str, list[str]] = {}
    for i, c in clusters.items():
        members.setdefault(c, []).append(i)
    for i, c, size in zip(*[kept.column(k).to_pylist() for k in ("id", "dup_cluster", "dup_cluster_size")]):
        assert c == min(members[c]) and size == len(members[c]) and i == min(members[c])
    rej = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "rejected" / "fuzzy").glob("*.parquet"))])
    assert set(rej.column("reason").to_pylist()) == {"near_duplicate"}
    assert all(clusters[i] == clusters[k] for i, k in zip(rej.column("id").to_pylist(), rej.column("keeper_id").to_pylist()))


def test_resume_after_deleting_later_markers(planted, tmp_path):
    recs = planted[:900]
    inputs = plant.write_parts(recs, tmp_path / "in", 3)
    run_stage(MinHashDedup(MinHashDedupConfig(), "fuzzy"), inputs, tmp_path / "full")
    want = outputs(tmp_path / "full", "fuzzy")
    assert not (tmp_path / "full" / "fuzzy" / "_work").exists()  # intermediate files deleted
    part = tmp_path / "part"
    run_stage(MinHashDedup(MinHashDedupConfig(keep_work=True), "fuzzy"), inputs, part)
    work = part / "fuzzy" / "_work"
    # Forget everything after the buckets step: the components' labels (this small graph is
    # labelled in memory: no rounds), the later steps, the outputs; also a half-written
    # signature task (its marker gone).
    assert not (work / "components" / "round-000").exists()
    for d in ["attach", "keepers", "components/labels"]:
        shutil.rmtree(work / d / "_done")
    (work / "signatures" / "_done" / "task-00001.json").unlink()
    shutil.rmtree(part / "fuzzy" / "_done")
    for p in (part / "fuzzy").glob("*.parquet"):
        p.unlink()
    stage = MinHashDedup(MinHashDedupConfig(keep_work=True), "fuzzy")
    run_stage(stage, inputs, part)
    assert outputs(part, "fuzzy") == want
    assert set(stage.last_run) >= {"signatures", "keepers"}
    # A finished stage is not recomputed.
    again = MinHashDedup(MinHashDedupConfig(keep_work=True), "fuzzy")
    run_stage(again, inputs, part)
    assert again.last_run == {}


def test_empty_and_tiny_documents(tmp_path):
    recs = [{"id": f"e{i}", "text": t, "source": "s"} for i, t in enumerate(["", "   ", "!!!", "a b", "a b", "word"])]
    inputs = plant.write_parts(recs, tmp_path / "in", 2)
    run_stage(MinHashDedup(MinHashDedupConfig(), "fuzzy"), inputs, tmp_path)
    out = outputs(tmp_path, "fuzzy")
    # Empty texts match nothing; the two "a b" documents are one cluster.
    assert out["rejected"] == [("e4", "near_duplicate", "e3")]
    assert ("e3", "e3", 2) in out["kept"] and ("e0", "e0", 1) in out["kept"]


def test_report_reasons_are_the_stages_reasons():
    from curate.pipeline.reporting import dedup_summary
    from curate.stages.dedup import exact, lsh

    assert dedup_summary.REASONS == (exact.REASON, lsh.REASON)
