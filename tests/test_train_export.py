"""The exported model folder is complete: transformers loads weights and tokenizer from it offline,
and the tokenizer gives the ids the model was trained on (the run's sentencepiece ids)."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import torch
import transformers

from curate.stages.tokens.tokenizers import TokenizerConfig, load_tokenizer, train_tokenizer  # noqa: E402
from curate.training.config import TrainConfig  # noqa: E402
from curate.training.hf_io import init_model  # noqa: E402
from curate.training.hf_tokenizer import export_tokenizer  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.synthetic import write_plan, write_tokens  # noqa: E402

SEQ = 64


def stdlib_texts(lo: int, hi: int) -> list[str]:
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    return [p.read_text(encoding="utf-8", errors="replace") for p in files[lo:hi]]


def held_out_texts() -> list[str]:
    """Real text the tokenizer was not trained on: stdlib sources and pydoc's help topics."""
    from pydoc_data.topics import topics

    return stdlib_texts(40, 70) + [topics[k] for k in sorted(topics)[:40]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    texts = stdlib_texts(0, 40)
    model = d / "tokenizer.model"
    train_tokenizer(texts, TokenizerConfig(vocab_size=1000, train_chars=400_000, num_threads=1), model)
    sp = load_tokenizer(model)
    docs = [np.array(ids, dtype=np.int64) for ids in sp.encode(texts)]
    tokens = write_tokens(d / "run", {"code": docs}, SEQ, sp.get_piece_size(), pad_id=sp.pad_id())
    (tokens / "tokenizer.model").write_bytes(model.read_bytes())
    write_plan(d / "run", [{"code": 1.0}], [SEQ * 4 * 2], SEQ,
               {"kind": "cosine", "lr_start": 1e-3, "lr_end": 1e-4, "warmup_tokens": 0},
               {"code": sum(len(x) + 1 for x in docs)})
    init_model(d / "base", "tiny", vocab_size=sp.get_piece_size(), max_position_embeddings=SEQ)
    cfg = TrainConfig(batch_tokens=SEQ * 4, micro_batch_rows=4, eval_every=0, plots=False, holdout_rows=2)
    train(d / "run", d / "base", config=cfg, out_dir=d / "out", quiet=True)
    return d / "out" / "model", sp


@pytest.mark.parametrize("use_fast", [True, False])
def test_auto_tokenizer_loads_the_export_and_gives_sentencepiece_ids(exported, use_fast):
    folder, sp = exported
    assert {"tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= \
        {p.name for p in folder.iterdir()}
    tok = transformers.AutoTokenizer.from_pretrained(folder, use_fast=use_fast, local_files_only=True)
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id) == \
        (sp.bos_id(), sp.eos_id(), sp.unk_id(), sp.pad_id())
    assert tok.model_max_length == SEQ and len(tok) == sp.get_piece_size()
    # Packed without BOS, so the tokenizer adds none: the ids are the training ids exactly, also for
    # text that starts with whitespace, indented code, CRLF and the text of a special piece.
    probes = ["  two spaces", "\ttab", " x", "    indented = 1\n        deeper\n", "a\r\nb\r\n", "<s> x </s>", "<unk>",
              "中文テキスト 😀", "\n\nx", "", " "]
    texts = held_out_texts() + probes
    assert len(texts) >= 40
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids == sp.encode(text), text[:60]
        assert tok.decode(ids) == text


def test_transformers_runs_the_exported_model_on_its_tokenizer(exported):
    folder, sp = exported
    tok = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
    batch = tok(["def f(x):\n    return x", "import os"], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
    assert logits.shape[-1] == model.config.vocab_size >= len(tok) and torch.isfinite(logits).all()


def test_bos_follows_the_packed_documents(exported, tmp_path):
    """A run packed with --add-bos trains on BOS + document: its tokenizer adds BOS the same way."""
    folder, sp = exported
    export_tokenizer(folder / "tokenizer.model", tmp_path, add_bos=True, max_length=SEQ)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["add_bos_token"] is True
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = held_out_texts()[0]
    assert tok(text)["input_ids"] == [sp.bos_id()] + sp.encode(text)
