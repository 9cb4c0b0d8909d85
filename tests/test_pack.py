"""Megatron indexed datasets and the two packers, as pure logic (no Ray)."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from curate.stages.tokens.megatron import IndexedDatasetWriter, read_indexed_dataset, token_dtype
from curate.stages.tokens.packing import (PackConfig, best_fit_bins, best_fit_placement, concat_placement, place, read_rows,
                            write_rows)


def spec_reader(prefix):
    """An independent reader written from the MMIDIDX layout (megatron-core indexed_dataset.py)."""
    idx = open(f"{prefix}.idx", "rb").read()
    assert idx[:9] == b"MMIDIDX\x00\x00"
    version, code, n_seq, n_doc = struct.unpack("<QBQQ", idx[9:34])
    assert version == 1
    dtype = {4: np.int32, 8: np.uint16}[code]
    sizes = np.frombuffer(idx, "<i4", n_seq, 34)
    pointers = np.frombuffer(idx, "<i8", n_seq, 34 + 4 * n_seq)
    doc_idx = np.frombuffer(idx, "<i8", n_doc, 34 + 12 * n_seq)
    assert len(idx) == 34 + 12 * n_seq + 8 * n_doc
    data = open(f"{prefix}.bin", "rb").read()
    seqs = [np.frombuffer(data, dtype, int(s), int(p)) for s, p in zip(sizes, pointers)]
    return code, seqs, doc_idx


def random_docs(rng, n, vocab):
    lengths = rng.integers(1, 300, size=n)
    return [rng.integers(0, vocab, size=int(n)) for n in lengths]


@pytest.mark.parametrize("vocab", [32000, 70000])
def test_indexed_dataset_follows_megatron_format(tmp_path, vocab):
    rng = np.random.default_rng(0)
    docs = random_docs(rng, 50, vocab)
    dtype = token_dtype(vocab)
    with IndexedDatasetWriter(tmp_path / "tokens", dtype) as w:
        w.add(np.concatenate(docs[:20]), [len(d) for d in docs[:20]])
        w.add(np.concatenate(docs[20:]), [len(d) for d in docs[20:]])
    code, seqs, doc_idx = spec_reader(tmp_path / "tokens")
    assert code == (8 if vocab < 65536 else 4)
    assert doc_idx.tolist() == list(range(51))
    assert all(np.array_equal(a, b) for a, b in zip(seqs, docs)) and len(seqs) == 50
    ds = read_indexed_dataset(tmp_path / "tokens")
    assert np.array_equal(ds[7], docs[7])


@pytest.mark.filterwarnings("ignore")
def test_megatron_core_reads_our_files(tmp_path):
    # megatron-core is installed by scripts/setup.sh (without its CUDA dependencies: this reader
    # needs only torch and numpy); a setup that lacks it fails here rather than skipping.
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    rng = np.random.default_rng(1)
    docs = random_docs(rng, 30, 32000)
    with IndexedDatasetWriter(tmp_path / "tokens", np.uint16) as w:
        w.add(np.concatenate(docs), [len(d) for d in docs])
    ds = IndexedDataset(str(tmp_path / "tokens"), multimodal=False, mmap=True)
    assert len(ds) == 30
    assert all(np.array_equal(ds[i], docs[i]) for i in range(30))
    assert ds.document_indices.tolist() == list(range(31))


def test_writer_leaves_nothing_on_error(tmp_path):
    with pytest.raises(ValueError, match="lengths sum"):
        with IndexedDatasetWriter(tmp_path / "tokens", np.uint16) as w:
            w.add(np.arange(10), [3, 3])
    assert list(tmp_path.iterdir()) == []


def naive_best_fit(sizes, capacity):
    """O(n * bins) reference: scan every open bin for the tightest fit."""
    rooms = []
    for s in sizes:
        fits = [(r, b) for b, r in enumerate(rooms) if r >= s]
        if fits:
            _, b = min(fits)
            rooms[b] -= s
        else:
            rooms.append(capacity - s)
    return sorted(capacity - r for r in rooms)


def test_best_fit_matches_the_naive_algorithm():
    rng = np.random.default_rng(2)
    cap = 257
    sizes = sorted(rng.integers(1, cap + 1, size=3000).tolist(), reverse=True)
    assign, n_bins = best_fit_bins(sizes, cap)
    fills = np.bincount(assign, weights=sizes, minlength=n_bins)
    assert fills.max() <= cap
    assert sorted(fills.astype(int).tolist()) == naive_best_fit(sizes, cap)


def check_placement(p, lengths, capacity):
    """Every token of every document is placed exactly once and rows never overflow."""
    order = np.lexsort((p.start, p.doc))
    doc, start, length = p.doc[order], p.start[order], p.length[order]
    for d in range(len(lengths)):
        sel = doc == d
        ends = np.cumsum(length[sel])
        assert start[sel][0] == 0 and np.array_equal(start[sel][1:], ends[:-1]) and ends[-1] == lengths[d]
    fill = np.bincount(p.row, weights=p.length, minlength=p.n_rows)
    assert fill.max() <= capacity and np.all(np.diff(p.row) >= 0)
    assert p.n_tokens == lengths.sum()


@pytest.mark.parametrize("fn", [concat_placement, best_fit_placement])
def test_placements_cover_every_token_once(fn):
    rng = np.random.default_rng(3)
    lengths = np.minimum(rng.lognormal(4.5, 1.2, size=800).astype(np.int64) + 1, 2000)
    p = fn(lengths, 129, seed=5)
    check_placement(p, lengths, 129)
    again = fn(lengths, 129, seed=5)
    assert all(np.array_equal(getattr(p, k), getattr(again, k)) for k in ("doc", "start", "length", "row"))
    assert not np.array_equal(fn(lengths, 129, seed=6).doc, p.doc)


def test_best_fit_keeps_short_documents_whole():
    rng = np.random.default_rng(4)
    lengths = rng.integers(1, 400, size=500)
    p = best_fit_placement(lengths, 257, seed=0)
    pieces = np.bincount(p.doc, minlength=len(lengths))
    assert np.all(pieces[lengths <= 257] == 1)
    # A long document: full rows of exactly `capacity`, then one remainder.
    assert np.all(pieces[lengths > 257] == 2)
    assert p.truncated_docs == int((lengths > 257).sum())


@pytest.mark.parametrize("low,high", [(1, 100), (1, 800), (258, 2000), (200, 258)])
@pytest.mark.parametrize("seed", [0, 1])
def test_best_fit_never_truncates_more_than_concat(low, high, seed):
    """Concat cuts every document longer than a row (as best-fit does) and also any that straddles
    a row boundary, so best-fit never cuts more. They tie when no short document straddles one,
    e.g. when every document is longer than a row: a corpus can give equal counts."""
    lengths = np.random.default_rng(seed).integers(low, high, size=400)
    best = best_fit_placement(lengths, 257, seed).truncated_docs
    concat = concat_placement(lengths, 257, seed).truncated_docs
    assert best == int((lengths > 257).sum()) <= concat
    if low > 257:
        assert best == concat == len(lengths)


def test_best_fit_truncates_fewer_when_short_documents_straddle_rows():
    """Documents of 2/3 of a row, all alike, so the shuffle cannot matter: concat puts every third
    across a row boundary, best-fit keeps all of them whole."""
    lengths = np.full(30, 2 * 86)
    for seed in range(3):
        assert best_fit_placement(lengths, 3 * 86, seed).truncated_docs == 0
        assert concat_placement(lengths, 3 * 86, seed).truncated_docs == len(lengths) // 3


def test_write_rows_segments_and_padding(tmp_path):
    rng = np.random.default_rng(5)
    docs = random_docs(rng, 120, 500)
    with IndexedDatasetWriter(tmp_path / "tokens", np.uint16) as w:
        w.add(np.concatenate(docs), [len(d) for d in docs])
    ds = read_indexed_dataset(tmp_path / "tokens")
    for packing in ("best-fit", "concat"):
        cfg = PackConfig(seq_len=99, packing=packing, rows_per_chunk=7)
        p = place(ds.lengths, cfg)
        stats = write_rows(ds, p, cfg, tmp_path, pad_id=499)
        rows, segs = read_rows(tmp_path, 99, np.uint16)
        assert rows.shape == (p.n_rows, 100) == segs.shape
        assert stats["n_pad"] == int((segs == 0).sum()) == rows.size - sum(map(len, docs))
        assert np.all(rows[segs == 0] == 499)
        # Rebuild each piece from its row and segment, compare with the document slice.
        k = np.zeros(p.n_rows, dtype=int)
        for d, s, n, r in zip(p.doc, p.start, p.length, p.row):
            k[r] += 1
            assert np.array_equal(rows[r][segs[r] == k[r]], docs[d][s : s + n])
        # Segments are numbered 1.. within a row, padding only at the end.
        for r in range(p.n_rows):
            nz = segs[r][segs[r] > 0]
            assert nz[0] == 1 and np.all(np.diff(nz) >= 0) and np.all(np.diff(nz) <= 1)
            assert np.all(segs[r][len(nz):] == 0)


def test_pack_config_validation():
    with pytest.raises(ValueError, match="seq_len"):
        PackConfig(seq_len=70000)
    with pytest.raises(ValueError, match="packing"):
        PackConfig(packing="greedy")


_TRAIN = """
import sys
from pathlib import Path
from pydoc_data.topics import topics
from curate.stages.tokens.tokenizers import TokenizerConfig, train_tokenizer, training_pieces
texts = [p for t in topics.values() for p in t.split("\\n\\n") if p.strip()]
cfg = TokenizerConfig(vocab_size=400, input_sentence_size=1000, num_threads=1)
assert len(list(training_pieces(texts, cfg.max_sentence_length))) > 2 * cfg.input_sentence_size
train_tokenizer(texts, cfg, Path(sys.argv[1]))
"""


def test_a_tokenizer_trained_on_more_pieces_than_it_samples_is_the_same_every_time(tmp_path):
    """Repacking a run whose tokenizer is retrained gives the same ids: sentencepiece's own sample
    of `input_sentence_size` pieces differs from one process to the next, the seeded sample taken
    before it does not."""
    import subprocess
    import sys

    for i in range(2):
        subprocess.run([sys.executable, "-c", _TRAIN, str(tmp_path / f"{i}.model")], check=True, timeout=120)
    assert (tmp_path / "0.model").read_bytes() == (tmp_path / "1.model").read_bytes()
