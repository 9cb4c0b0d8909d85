"""The run's sentencepiece tokenizer as a Hugging Face Llama tokenizer, beside the exported weights.

`export_tokenizer` writes into a model folder:

- `tokenizer.model`: the very sentencepiece file the tokens were packed with;
- `tokenizer_config.json`: `LlamaTokenizer` (the fast class is converted from the same file)
  with `legacy: false`, so text after a user-defined piece (`\\n`, `\\t`) gets no extra dummy
  prefix, exactly as sentencepiece encodes it; `add_bos_token` as the packer put BOS (or not)
  before each document, so a downstream tool feeds the model what it was trained on;
- `special_tokens_map.json`: the model's own BOS / EOS / UNK / PAD pieces.

`AutoTokenizer.from_pretrained(folder)` then works offline, as transformers, vLLM and lm-eval
load it, and gives sentencepiece's ids (the conversion to the fast tokenizer needs the
`protobuf` package). One known difference, from transformers' conversion itself: text that
*starts* with whitespace gets one fewer leading space piece.
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


def export_tokenizer(model_file: Path, folder: Path, add_bos: bool, max_length: int) -> list[Path]:
    """Write the Llama tokenizer files for `model_file` into `folder`; returns the paths written."""
    folder = Path(folder)
    specials = special_tokens(Path(model_file))
    config = {
        "tokenizer_class": "LlamaTokenizer",
        "legacy": False,
        "add_bos_token": bool(add_bos),
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": int(max_length),
        "padding_side": "right",
        "sp_model_kwargs": {},
        **specials,
    }
    paths = [folder / "tokenizer.model", folder / "tokenizer_config.json", folder / "special_tokens_map.json"]
    shutil.copyfile(model_file, paths[0])
    paths[1].write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    paths[2].write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")
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
