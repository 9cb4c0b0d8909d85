"""Tokenizer files beside saved weights, so every checkpoint is a complete Hugging Face folder.

A run packed with a Hugging Face tokenizer (RUN/tokens/tokenizer/) gets those files copied as they
are (`tokenizer_writer`). A run packed with curate's own sentencepiece model gets it exported by
`export_tokenizer`:

- `tokenizer.model`: the very sentencepiece file the tokens were packed with;
- `tokenizer.json`: the same pieces laid out as sentencepiece encodes
  (`sentencepiece_as_tokenizers`), so `AutoTokenizer` gives sentencepiece's ids, also on text that
  starts with whitespace, on indented code and on the text of `<s>` (tested);
- `tokenizer_config.json`: `split_special_tokens` (a document's `<s>` stays text), `add_bos_token`
  as the packer put BOS (or not) before each document, so a downstream tool feeds the model what
  it was trained on;
- `special_tokens_map.json`: the model's own BOS / EOS / UNK / PAD pieces.

`AutoTokenizer.from_pretrained(folder)` then works offline, as transformers, vLLM and lm-eval load it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def special_tokens(model_file: Path) -> dict[str, str]:
    """The sentencepiece model's special pieces, by Hugging Face role (absent roles left out)."""
    try:
        import sentencepiece as spm
    except ImportError as e:  # pragma: no cover - sentencepiece is a core dependency
        raise ImportError("exporting the tokenizer needs sentencepiece: pip install sentencepiece") from e
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    ids = {"bos_token": sp.bos_id(), "eos_token": sp.eos_id(), "unk_token": sp.unk_id(), "pad_token": sp.pad_id()}
    return {role: sp.id_to_piece(i) for role, i in ids.items() if i >= 0}


def sentencepiece_as_tokenizers(model_file: Path, add_bos: bool):
    """A `tokenizers.Tokenizer` that gives sentencepiece's ids for curate's sentencepiece models
    (identity normalisation, whitespace kept, dummy prefix, byte fallback, user-defined symbols).

    transformers' own conversion differs on text that starts with whitespace (Metaspace prepends
    no `▁` to text that already starts with one) and after a user-defined piece (it restarts the
    dummy prefix there), so the pieces are laid out as sentencepiece does it instead: one `▁` before
    the whole text, spaces as `▁`, words starting at each run of `▁` (`SplitIntoWords` with
    whitespace-only pieces allowed), user-defined pieces atomic inside words.
    """
    import re

    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers.convert_slow_tokenizer import SentencePieceExtractor

    ex = SentencePieceExtractor(str(model_file))
    proto = ex.proto
    unk = proto.trainer_spec.unk_id
    if proto.trainer_spec.model_type == 1:  # unigram
        model = models.Unigram([(p.piece, p.score) for p in proto.pieces], unk_id=unk, byte_fallback=True)
    else:
        kw = ex.extract(models.BPE)
        model = models.BPE(vocab=kw["vocab"], merges=kw["merges"], unk_token=proto.pieces[unk].piece,
                           byte_fallback=True, fuse_unk=True)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    splits = [pre_tokenizers.Split(Regex("▁+[^▁]*|[^▁]+"), behavior="isolated")]
    user = [p.piece for p in proto.pieces if p.type == 4]  # USER_DEFINED
    if user:
        splits.append(pre_tokenizers.Split(Regex("|".join(re.escape(u) for u in sorted(user, key=len, reverse=True))),
                                           behavior="isolated"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(splits)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens([AddedToken(p.piece, special=True, normalized=False)
                            for p in proto.pieces if p.type in (2, 3)])  # UNKNOWN, CONTROL
    bos = proto.trainer_spec.bos_id
    if add_bos and bos >= 0:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{proto.pieces[bos].piece} $A", pair=f"{proto.pieces[bos].piece} $A $B",
            special_tokens=[(proto.pieces[bos].piece, bos)])
    return tok


def export_tokenizer(model_file: Path, folder: Path, add_bos: bool, max_length: int) -> list[Path]:
    """Write the tokenizer files for `model_file` into `folder`; returns the paths written."""
    folder = Path(folder)
    specials = special_tokens(Path(model_file))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        # The text of `<s>` in a document is text, as sentencepiece encodes it.
        "split_special_tokens": True,
        "add_bos_token": bool(add_bos),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_length),
        "padding_side": "right",
        **specials,
    }
    paths = [folder / "tokenizer.model", folder / "tokenizer.json", folder / "tokenizer_config.json",
             folder / "special_tokens_map.json"]
    shutil.copyfile(model_file, paths[0])
    sentencepiece_as_tokenizers(Path(model_file), add_bos).save(str(paths[1]))
    paths[2].write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    paths[3].write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")
    return paths


def run_tokenizer(tokens_dir: Path) -> tuple[Path, bool] | None:
    """The run's tokenizer (`tokens/tokenizer.model`) and whether documents were packed with BOS;
    None when the token files came without one (then the export has weights only)."""
    model = Path(tokens_dir) / "tokenizer.model"
    if not model.is_file():
        return None
    index = Path(tokens_dir) / "index.json"
    add_bos = bool(json.loads(index.read_text()).get("add_bos", False)) if index.is_file() else False
    return model, add_bos


def tokenizer_writer(run_dir: Path, base: Path, max_length: int):
    """What puts the tokenizer into every checkpoint and the exported model, so each is a complete
    Hugging Face folder: the base's own tokenizer files, byte for byte, when the run was packed
    with that tokenizer; else the run's (a Hugging Face tokenizer's files copied, or the run's
    sentencepiece model exported as above); None when the run has no tokenizer file."""
    from curate.stages.tokens.tokenizers import HF_TOKENIZER_FILES, is_hf, resolve_model_path, tokenizer_digest

    tokens_dir = Path(run_dir) / "tokens"
    run_tok = tokens_dir / "tokenizer" if (tokens_dir / "tokenizer" / "tokenizer.json").is_file() else None
    run_tok = run_tok or (tokens_dir / "tokenizer.model" if (tokens_dir / "tokenizer.model").is_file() else None)
    if run_tok is None:
        return None
    try:
        base_tok = resolve_model_path(base)
    except FileNotFoundError:
        base_tok = None
    if base_tok is not None and is_hf(base_tok) and is_hf(run_tok) and \
            tokenizer_digest(base_tok) == tokenizer_digest(run_tok):
        run_tok = base_tok  # the same files; the base's set may hold more (vocab.json, chat template)
    if is_hf(run_tok):
        names = [n for n in HF_TOKENIZER_FILES if (run_tok / n).is_file()]

        def copy(folder: Path) -> None:
            for n in names:
                shutil.copyfile(run_tok / n, Path(folder) / n)
        return copy
    found = run_tokenizer(tokens_dir)
    add_bos = found[1] if found else False
    return lambda folder: export_tokenizer(run_tok, Path(folder), add_bos=add_bos, max_length=max_length)
