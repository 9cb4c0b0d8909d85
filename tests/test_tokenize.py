"""Tokenizer training/loading and the tokenize stage, on real text."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from curate.stages import docshard
from curate.stages.tokens.tokenizers import (TokenizerConfig, TokenizeTask, load_tokenizer, resolve_model_path, tokenize_shard,
                             tokenizer_info, train_tokenizer, training_pieces)
from test_pack_common import load_docs, make_run

EDGE_CASES = [
    "",
    " ",
    "  two leading spaces",
    "trailing spaces   ",
    "\ttab\tseparated\n\n\nblank lines\r\nCRLF",
    "ﬁ ligature and ① circled and ＡＢＣ fullwidth",  # NFKC would rewrite these
    "é ü ß 漢字 كلمة 🙂 \u200b zero width",
    "    def f(x):\n        return x  # indented code\n",
]


@pytest.fixture(scope="module")
def corpus_docs(system_corpus):
    return load_docs(system_corpus)


@pytest.fixture(scope="module")
def model(tmp_path_factory, corpus_docs):
    out = tmp_path_factory.mktemp("tok") / "tokenizer.model"
    cfg = TokenizerConfig(vocab_size=2000, train_chars=2_000_000, num_threads=2)
    info = train_tokenizer((d["text"] for d in corpus_docs), cfg, out)
    return info


def test_round_trip_is_exact_on_real_documents(model, corpus_docs):
    sp = load_tokenizer(model.path)
    texts = [d["text"] for d in corpus_docs] + EDGE_CASES
    ids = sp.encode(texts, num_threads=2)
    bad = [t[:60] for t, i in zip(texts, ids) if sp.decode(i) != t]
    assert not bad, f"{len(bad)} texts do not round-trip, e.g. {bad[:3]}"
    # Byte fallback really is used (the corpus has characters outside the learned pieces).
    assert any(sp.id_to_piece(i).startswith("<0x") for i in sp.encode("漢字 🙂"))


def test_trained_model_specials_and_info(model):
    assert (model.vocab_size, model.bos_id, model.eos_id, model.pad_id) == (2000, 1, 2, 3)
    assert model.dtype == np.uint16
    sp = load_tokenizer(model.path)
    assert sp.id_to_piece(2) == "</s>" and sp.encode("a\nb", out_type=str).count("\n") == 1


def test_training_pieces_are_bounded_and_lossless():
    long_line = "x" * 5000
    text = "short line\n" + long_line + "\n" + "another\n" * 300
    pieces = list(training_pieces([text], max_bytes=1024))
    assert "".join(pieces) == text
    assert max(len(p.encode()) for p in pieces) <= 1024
    assert len(pieces) > 5


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="vocab_size"):
        TokenizerConfig(vocab_size=10)
    with pytest.raises(ValueError, match="model_type"):
        TokenizerConfig(model_type="wordpiece")
    with pytest.raises(ValueError, match="character_coverage"):
        TokenizerConfig(character_coverage=0.5)


def test_too_large_vocabulary_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["tiny text " * 50], TokenizerConfig(vocab_size=50000), tmp_path / "t.model")


def test_hugging_face_folder_loads(model, corpus_docs, tmp_path):
    folder = tmp_path / "llama"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="tokenizer.model"):
        resolve_model_path(folder)
    shutil.copy(model.path, folder / "tokenizer.model")
    info = tokenizer_info(folder)
    assert info.vocab_size == model.vocab_size and info.digest == model.digest
    import transformers
    hf = transformers.LlamaTokenizer.from_pretrained(str(folder))
    sp = load_tokenizer(folder)
    # Hugging Face's conversion handles leading whitespace differently from sentencepiece;
    # every other document must give identical ids.
    texts = [d["text"] for d in corpus_docs[:60] if d["text"][:1].strip()]
    assert len(texts) > 30
    same = sum(sp.encode(t) == hf(t, add_special_tokens=False)["input_ids"] for t in texts)
    assert same == len(texts)


def test_unigram_model_round_trips(tmp_path, corpus_docs):
    cfg = TokenizerConfig(vocab_size=1000, model_type="unigram", train_chars=500_000, num_threads=2)
    info = train_tokenizer((d["text"] for d in corpus_docs), cfg, tmp_path / "u.model")
    sp = load_tokenizer(info.path)
    for t in EDGE_CASES + [d["text"] for d in corpus_docs[:20]]:
        assert sp.decode(sp.encode(t)) == t


def test_tokenize_shard_counts_groups_and_resumes(model, corpus_docs, tmp_path):
    run = make_run(tmp_path / "run", corpus_docs[:60], n_parts=1)
    part = run / "ingest" / "part-00000-000.parquet"
    # Overlapping predicates: `code` comes first, so stdlib sources never land in `all_text`.
    sql = "CASE WHEN (domain = 'code') THEN 'code' WHEN (n_chars > 0) THEN 'all_text' ELSE NULL END"
    task = TokenizeTask(str(part), str(run / "tokenize"), model.path, sql, "h1", threads=2, batch_chars=20_000)
    marker = tokenize_shard(task)
    table = docshard.read_docs(task.output)
    sp = load_tokenizer(model.path)
    expect = [sp.encode(t) for t in table.column("text").to_pylist()]
    assert table.column("n_tokens").to_pylist() == [len(e) for e in expect]
    ids = np.fromfile(task.ids, dtype=np.uint16)
    assert ids.tolist() == [i for e in expect for i in e]
    groups = table.column("group").to_pylist()
    domains = table.column("domain").to_pylist()
    n_chars = table.column("n_chars").to_pylist()
    assert groups == ["code" if d == "code" else ("all_text" if n > 0 else None) for d, n in zip(domains, n_chars)]
    assert marker["counts"]["in"] == marker["counts"]["kept"] == 60
    assert marker["groups"]["code"]["docs"] == domains.count("code")
    assert sum(g["tokens"] for g in marker["groups"].values()) == marker["counts"]["tokens"] == len(ids)
    assert marker["groups"]["all_text"]["docs"] + marker["groups"]["code"]["docs"] + marker["counts"]["unassigned_docs"] == 60
    # Outputs are named relative to the stage folder, like every stage's; `input` names the shard read.
    assert marker["input"] == str(part)
    assert marker["outputs"] == [task.output.name, "_ids/part-00000-000.bin"]
    assert all((run / "tokenize" / o).exists() for o in marker["outputs"])
    # Rerun: the marker matches, nothing is rewritten.
    mtime = task.output.stat().st_mtime_ns
    assert tokenize_shard(task).get("skipped") is True
    assert task.output.stat().st_mtime_ns == mtime
    # Another config hash (e.g. another tokenizer) recomputes.
    redo = TokenizeTask(str(part), str(run / "tokenize"), model.path, sql, "h2", threads=1)
    assert not tokenize_shard(redo).get("skipped")


def test_bad_group_predicate_names_the_problem(model, corpus_docs, tmp_path):
    run = make_run(tmp_path / "run", corpus_docs[:5], n_parts=1)
    task = TokenizeTask(str(run / "ingest" / "part-00000-000.parquet"), str(run / "tokenize"), model.path,
                        "CASE WHEN (no_such_column = 1) THEN 'x' END", "h")
    with pytest.raises(ValueError, match="no_such_column"):
        tokenize_shard(task)
    assert not task.output.exists()
