"""Continue the user's model: Hugging Face bases of the Llama, Mistral and Qwen2 families with
byte-level BPE (Llama-3, Qwen) or sentencepiece-style BPE (Mistral) tokenizer.json files, built
offline here: tokenizers trained at run time on pydoc's help topics, random-weight models from
transformers configs. Each goes pack -> train -> a checkpoint transformers loads with its tokenizer
-> curate eval, and curate's forward equals transformers' on the trained weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import torch
import transformers
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from curate.pipeline.commands.evaluation import eval_model  # noqa: E402
from curate.pipeline.commands.pack import pack  # noqa: E402
from curate.pipeline.errors import CurateError  # noqa: E402
from curate.stages.base import LocalExecutor  # noqa: E402
from curate.stages.tokens.megatron import IndexedDatasetWriter, token_dtype  # noqa: E402
from curate.stages.tokens.tokenizers import load_tokenizer, tokenizer_info  # noqa: E402
from curate.training.config import TrainConfig  # noqa: E402
from curate.training.hf_io import init_like, load_model  # noqa: E402
from curate.training.loop import train  # noqa: E402
from curate.training.synthetic import write_plan  # noqa: E402
from test_pack_common import make_run  # noqa: E402

SEQ = 64
# The split patterns the families ship in their tokenizer.json (Llama-3 groups digits by three, Qwen2 by one).
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")
PROBES = ["  two leading spaces", "\tleading tab", "def f(x):\n    if x:\n        return x\n", "line one\r\nline two\r\n",
          "中文文本，日本語のテキスト、한국어", "emoji 😀🎉👍🏽 ok", "a" * 3000, "Pneumonoultramicroscopicsilicovolcanoconiosis " * 30,
          "<s> literal </s> <unk>", "text <|endoftext|> more", "<|begin_of_text|>hello<|end_of_text|>",
          "<|im_start|>user", " ", "", "x", "12345678901234567890", "trailing   "]


def topics() -> list[str]:
    from pydoc_data.topics import topics as t

    return [v for _, v in sorted(t.items()) if len(v) > 400]


def _byte_level(split: str, specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(topics(), trainers.BpeTrainer(vocab_size=1000, special_tokens=specials,
                                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def llama3_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tok = _byte_level(LLAMA3_SPLIT, ["<|begin_of_text|>", "<|end_of_text|>"])
    tok.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", tok.token_to_id("<|begin_of_text|>"))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>",
                                                eos_token="<|end_of_text|>")


def qwen2_tokenizer() -> transformers.PreTrainedTokenizerFast:
    tok = _byte_level(QWEN2_SPLIT, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                                pad_token="<|endoftext|>")


def mistral_tokenizer() -> transformers.PreTrainedTokenizerFast:
    """Sentencepiece-style BPE as Mistral's tokenizer.json has it: metaspace, byte fallback, <s> first."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    byte_pieces = [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(topics(), trainers.BpeTrainer(vocab_size=1000,
                                                          special_tokens=["<unk>", "<s>", "</s>"] + byte_pieces))
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                                unk_token="<unk>")


def _dims(fast) -> dict:
    # Embedding rows above the tokenizer's ids, as Qwen2.5 and Llama-3 ship (rounded for the GPU).
    return dict(vocab_size=-(-len(fast) // 64) * 64, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)


FAMILIES = {
    "qwen2": (qwen2_tokenizer, lambda f: transformers.Qwen2Config(
        **_dims(f), tie_word_embeddings=True, bos_token_id=None, eos_token_id=f.eos_token_id)),
    "llama3": (llama3_tokenizer, lambda f: transformers.LlamaConfig(
        **_dims(f), bos_token_id=f.bos_token_id, eos_token_id=f.eos_token_id, rope_theta=500000.0,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 64})),
    "mistral": (mistral_tokenizer, lambda f: transformers.MistralConfig(
        **_dims(f), bos_token_id=f.bos_token_id, eos_token_id=f.eos_token_id)),
}
CLASSES = {"qwen2": "Qwen2ForCausalLM", "llama3": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}


def make_base(folder: Path, family: str) -> Path:
    make_tok, make_cfg = FAMILIES[family]
    fast = make_tok()
    fast.save_pretrained(folder)
    for extra in ("tokenizer.model",):  # a tokenizer.json-only folder, as the bases ship
        (folder / extra).unlink(missing_ok=True)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(make_cfg(fast))
    with torch.no_grad():  # transformers zero-inits biases; random ones make the q/k/v bias path count
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.05)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {f: make_base(root / f, f) for f in FAMILIES}


def hf_tokenizer(folder: Path):
    return transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True, split_special_tokens=True)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_ids_and_specials_equal_transformers(bases, family):
    folder = bases[family]
    ours, theirs = load_tokenizer(folder), hf_tokenizer(folder)
    texts = PROBES + topics()[:20]
    got = ours.encode(texts)
    for text, ids in zip(texts, got):
        assert ids == theirs(text, add_special_tokens=False).input_ids, repr(text[:40])
        # The text of a special token stays text: no control id comes out of a document.
        specials = {ours.bos_id(), ours.eos_id(), ours.unk_id()} - {-1}
        assert not specials & set(ids) or family == "mistral" and ours.unk_id() in ids, repr(text[:40])
    info = tokenizer_info(folder)
    assert (info.bos_id, info.eos_id) == (theirs.bos_token_id if theirs.bos_token_id is not None else -1,
                                          theirs.eos_token_id)
    # BOS as the tokenizer itself adds it: Llama-3 and Mistral put it first, Qwen adds none.
    with_specials = theirs("probe").input_ids
    assert info.add_bos == (with_specials[0] == theirs.bos_token_id) == (family != "qwen2")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_round_trip_pack_train_load_eval(bases, family, tmp_path):
    base = bases[family]
    texts = topics()
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=2)
    write_plan(run, [{"pydoc": 1.0}], [SEQ * 4 * 3], SEQ,
               {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0},
               {"pydoc": sum(len(t) for t in texts) // 4})
    index = pack(run, tokenizer=str(base), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.05).index
    theirs = hf_tokenizer(base)
    n_text = sum(pq.read_table(p, columns=["n_tokens"]).column(0).to_numpy().sum()
                 for p in sorted((run / "tokenize").glob("*.parquet")))
    assert n_text == sum(len(theirs(t, add_special_tokens=False).input_ids) for t in texts)
    assert index["add_bos"] == (family != "qwen2") and index["tokenizer"] == "tokens/tokenizer"
    assert index["dtype"] == "uint16"

    cfg = TrainConfig(batch_tokens=SEQ * 4, micro_batch_rows=4, eval_every=3, checkpoint_every=2, keep_checkpoints=3, plots=False,
                      holdout_rows=2, tensorboard=False)
    result = train(run, base, config=cfg, out_dir=tmp_path / "out", quiet=True)
    assert result["steps"] == 3 and any(k.endswith("/bpb") for k in result)
    ids = torch.tensor([theirs("def f(x):\n    return x  # <s> stays text").input_ids])
    base_hf = transformers.AutoModelForCausalLM.from_pretrained(base, local_files_only=True).eval()
    for folder in (tmp_path / "out" / "checkpoints" / "step-000002", tmp_path / "out" / "model"):
        for name in [n for n in ("tokenizer.json", "tokenizer_config.json") if (base / n).is_file()]:
            assert (folder / name).read_bytes() == (base / name).read_bytes(), name
        assert json.loads((folder / "config.json").read_text()).keys() == \
            json.loads((base / "config.json").read_text()).keys()
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()
        assert type(hf).__name__ == CLASSES[family]
        assert hf_tokenizer(folder)("probe").input_ids == theirs("probe").input_ids
        with torch.no_grad():
            logits = hf(ids).logits
            assert (logits - load_model(folder).eval()(ids)).abs().max().item() < 1e-5
            assert not torch.allclose(logits, base_hf(ids).logits), "training changed nothing"
    res = eval_model(tmp_path / "out" / "model", run, out=tmp_path / "eval", block=SEQ, stride=SEQ // 2,
                     echo=lambda s: None)
    assert res["sets"] and all(np.isfinite(s["bpb"]) and s["bpb"] > 0 for s in res["sets"].values())


def test_init_like_makes_a_small_model_of_the_base(bases, tmp_path):
    out = init_like(bases["qwen2"], tmp_path / "proxy", "tiny", seed=3)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert type(hf).__name__ == "Qwen2ForCausalLM" and hf.config.tie_word_embeddings
    assert hf_tokenizer(out)("x y").input_ids == hf_tokenizer(bases["qwen2"])("x y").input_ids
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert (hf(ids).logits - load_model(out)(ids)).abs().max().item() < 1e-5


def test_megatron_core_reads_a_large_vocabulary_file(tmp_path):
    """Ids above uint16 (a 128k or 152k vocabulary) are stored 4 bytes wide, as int32: the widest
    type Megatron's DType codes have, and megatron-core reads the file."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    dtype = token_dtype(151_665)
    assert dtype.itemsize == 4 and token_dtype(65_535) == np.uint16
    docs = [np.array([151_664, 70_000, 3]), np.array([128_000, 65_536])]
    with IndexedDatasetWriter(tmp_path / "big", dtype) as w:
        w.add(np.concatenate(docs), [len(d) for d in docs])
    ds = IndexedDataset(str(tmp_path / "big"), mmap=True)
    assert [ds[i].tolist() for i in range(len(ds))] == [d.tolist() for d in docs]


def _copy_base(bases, tmp_path, family="qwen2") -> Path:
    import shutil

    return Path(shutil.copytree(bases[family], tmp_path / "b"))


def test_bad_bases_fail_before_any_work(bases, tmp_path):
    texts = topics()[:10]
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=1)

    def pack_with(folder):
        return pack(run, tokenizer=str(folder), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)

    (tmp_path / "empty").mkdir()
    with pytest.raises(CurateError, match=r"neither tokenizer.json .* nor tokenizer.model"):
        pack_with(tmp_path / "empty")
    base = _copy_base(bases, tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "vocab_size": 500}))
    with pytest.raises(CurateError, match=r"config.json: vocab_size 500 is smaller than the \d+ ids"):
        pack_with(base)
    (base / "config.json").write_text(json.dumps({**cfg, "eos_token_id": 7}))
    with pytest.raises(CurateError, match=r"config.json: eos_token_id 7 but the tokenizer .* gives eos_token id"):
        pack_with(base)
    tcfg = json.loads((base / "tokenizer_config.json").read_text())
    (base / "tokenizer_config.json").write_text(json.dumps({**tcfg, "eos_token": "<|nope|>"}))
    with pytest.raises(CurateError, match=r"tokenizer_config.json: eos_token '<\|nope\|>' is not a token"):
        pack_with(base)
    assert not (run / "tokenize").exists(), "nothing may be tokenized before the checks"


def test_unsupported_architecture_fails_before_training(bases, tmp_path):
    from curate.training.hf_io import read_config

    base = _copy_base(bases, tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ValueError, match=r"config.json: model_type 'gpt2' is not supported \(valid: llama, mistral, qwen2\)"):
        read_config(base)
    (base / "config.json").write_text(json.dumps({**cfg, "rope_parameters": {"rope_type": "yarn", "factor": 2.0}}))
    with pytest.raises(ValueError, match=r"config.json: .*rope_scaling type 'yarn' is not supported"):
        read_config(base)


def test_bits_per_byte_equal_transformers_and_a_ladder_mixes_families(bases):
    """lm_score / PreSelect scoring of each base with its own tokenizer.json equals the bits per byte
    transformers gives the same text (the start token, BOS or, for Qwen, EOS, then the text's ids);
    a ladder of two families with different tokenizers scores the same texts."""
    import math

    from curate.scorers.preselect import score_ladder

    texts = [t[:700] for t in topics()[:4]] + ["def f(x):\n    return x  # <|endoftext|>"]
    for family in ("qwen2", "llama3"):
        from curate.scorers.lm import LMScorer

        rows = LMScorer(bases[family], device="cpu", block=512, stride=256).doc_bits(texts)
        tok = hf_tokenizer(bases[family])
        hf = transformers.AutoModelForCausalLM.from_pretrained(bases[family], local_files_only=True).eval()
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        for text, (bits, n_bytes, n_tok) in zip(texts, rows):
            ids = [start] + tok(text, add_special_tokens=False).input_ids
            with torch.no_grad():
                logits = hf(torch.tensor([ids])).logits[0, :-1]
            want = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="sum").item() / math.log(2)
            assert (n_bytes, n_tok) == (len(text.encode()), len(ids) - 1)
            assert bits == pytest.approx(want, rel=1e-4)
    bpb = score_ladder([bases["qwen2"], bases["llama3"]], texts, None, None, 512, 256, 8192, "cpu", "bos", None)
    assert bpb.shape == (len(texts), 2) and np.isfinite(bpb).all()


def test_smollm2_style_tied_llama_forward_and_config_round_trip(tmp_path):
    """SmolLM2 is a Llama with tied embeddings: curate's forward equals transformers', and the saved
    folder has the base's config fields and one embedding matrix."""
    from curate.training.hf_io import save_model

    cfg = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                   rope_theta=100000.0, max_position_embeddings=128)
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(cfg).save_pretrained(tmp_path / "base")
    ours = load_model(tmp_path / "base").eval()
    save_model(ours, tmp_path / "again")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "again", local_files_only=True).eval()
    base = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "base", local_files_only=True).eval()
    ids = torch.randint(0, 320, (2, 40))
    with torch.no_grad():
        assert (base(ids).logits - ours(ids)).abs().max().item() < 1e-5
        assert torch.equal(again(ids).logits, base(ids).logits)
    saved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert saved.keys() == json.loads((tmp_path / "base" / "config.json").read_text()).keys()
    assert saved["tie_word_embeddings"] is True and again.lm_head.weight is again.model.embed_tokens.weight


def test_bare_tokenizer_json_takes_eos_from_the_model_config(bases, tmp_path):
    """A model folder with tokenizer.json and config.json only: EOS from config.json's eos_token_id."""
    import shutil

    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copyfile(bases["qwen2"] / name, folder / name)
    assert tokenizer_info(folder).eos_id == tokenizer_info(bases["qwen2"]).eos_id >= 0
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match=r"bare/tokenizer_config.json has no EOS token \(eos_token\)"):
        tokenizer_info(folder)


def test_pack_with_a_bare_tokenizer_json_folder(bases, tmp_path):
    import shutil

    folder = tmp_path / "bare"
    folder.mkdir()
    for name in ("tokenizer.json", "config.json"):
        shutil.copyfile(bases["qwen2"] / name, folder / name)
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in topics()[:6]], n_parts=1)
    index = pack(run, tokenizer=str(folder), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0).index
    assert index["eos_id"] == tokenizer_info(bases["qwen2"]).eos_id and index["add_bos"] is False


def test_train_refuses_a_base_whose_eos_differs_from_the_packed_tokens(bases, tmp_path):
    texts = topics()[:12]
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=1)
    write_plan(run, [{"pydoc": 1.0}], [SEQ * 4], SEQ,
               {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0},
               {"pydoc": sum(len(t) for t in texts) // 4})
    pack(run, tokenizer=str(bases["qwen2"]), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    base = _copy_base(bases, tmp_path)
    cfg = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**cfg, "eos_token_id": 5}))
    with pytest.raises(ValueError, match=r"b/config.json: eos_token_id 5 but the tokenizer .*tokens/tokenizer\) gives "
                                         r"eos_token id \d+"):
        train(run, base, config=TrainConfig(batch_tokens=SEQ * 4, micro_batch_rows=4, plots=False,
                                            tensorboard=False, holdout_rows=1), out_dir=tmp_path / "out", quiet=True)
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_plan_measures_tokens_per_char_with_the_runs_tokenizer_json(bases, tmp_path):
    # After `pack --tokenizer BASE`, the run's tokenizer is RUN/tokens/tokenizer/ (tokenizer.json):
    # `curate plan` estimates tokens with it, as it does with a sentencepiece model.
    from curate.pipeline.catalog.db import connect
    from curate.pipeline.commands.plan import measure_tokens_per_char

    texts = topics()[:6]
    run = make_run(tmp_path / "run", [{"text": t, "source": "pydoc"} for t in texts], n_parts=1)
    pack(run, tokenizer=str(bases["qwen2"]), executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    fast = hf_tokenizer(bases["qwen2"])
    want = sum(len(fast(t, add_special_tokens=False).input_ids) for t in texts) / sum(map(len, texts))
    con = connect(run)
    try:
        assert measure_tokens_per_char(con, run / "tokens" / "tokenizer") == pytest.approx(want)
    finally:
        con.close()
