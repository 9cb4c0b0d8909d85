"""A Hugging Face `tokenizer.json` (Llama-3, Qwen2.5, SmolLM2, Mistral ...) read through the
`tokenizers` library, with the sentencepiece method names the rest of curate calls (`encode`,
`get_piece_size`, `bos_id`, `eos_id`, `pad_id`), so packing, scoring and evaluation take either.

What it gives, and why:

- ids equal to `transformers.AutoTokenizer.from_pretrained(folder, split_special_tokens=True)`
  with `add_special_tokens=False`: the same Rust tokenizer, the same file. The text of a special
  token (`<s>`, `<|endoftext|>` inside a web page) stays text (`encode_special_tokens`): a
  document must never inject a control id the model treats as a boundary.
- BOS/EOS/PAD as the folder's `tokenizer_config.json` (else `special_tokens_map.json`, else the
  ids of its `config.json`) names them;
  whether a document starts with BOS is what the tokenizer's own post-processor does to a text
  (Llama-3's template adds `<|begin_of_text|>`; Qwen's adds nothing), unless the config sets
  `add_bos_token` explicitly.
- batches go through `encode_batch_fast` (no offsets), which tokenizes on all the process's
  threads (the `tokenizers` Rayon pool; RAYON_NUM_THREADS caps it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")


def _token_text(value: Any) -> str | None:
    # A role is written as a string, or as a serialised AddedToken ({"content": ..., ...}).
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_special_tokens(folder: Path) -> tuple[dict[str, str], dict[str, Path]]:
    """The text of each special role, and the file that names it: tokenizer_config.json first,
    special_tokens_map.json for roles it leaves out."""
    names: dict[str, str] = {}
    where: dict[str, Path] = {}
    for fname in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / fname
        if not path.is_file():
            continue
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from None
        for role in ROLES:
            text = _token_text(cfg.get(role))
            if role not in names and text is not None:
                names[role], where[role] = text, path
    return names, where


def read_tokenizer_config(folder: Path) -> dict:
    path = folder / "tokenizer_config.json"
    return json.loads(path.read_text()) if path.is_file() else {}


class HFTokenizer:
    """`tokenizer.json` of `folder`, encoding texts as plain text (special-token text stays text)."""

    def __init__(self, folder: Path) -> None:
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        path = self.folder / "tokenizer.json"
        try:
            self.tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a plain Exception on a malformed file
            raise ValueError(f"{path} is not a Hugging Face tokenizer: {e}") from None
        self.tok.encode_special_tokens = True
        vocab = self.tok.get_vocab(with_added_tokens=True)
        self.size = max(vocab.values()) + 1 if vocab else 0
        names, where = read_special_tokens(self.folder)
        self.ids: dict[str, int] = {}
        for role, text in names.items():
            i = vocab.get(text)
            if i is None:
                raise ValueError(f"{where[role]}: {role} {text!r} is not a token of {path.name}")
            self.ids[role] = i
        self._ids_from_model_config(vocab)
        self.add_bos = self._adds_bos(read_tokenizer_config(self.folder))

    def _ids_from_model_config(self, vocab: dict[str, int]) -> None:
        """BOS/EOS ids from the folder's config.json for roles the tokenizer files leave unnamed
        (a model folder with a bare tokenizer.json)."""
        path = self.folder / "config.json"
        if not path.is_file():
            return
        try:
            cfg = json.loads(path.read_text())
        except json.JSONDecodeError:
            return  # the model's config is checked, with its own message, where the model is loaded
        for role, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id")):
            i = cfg.get(key)
            i = i[0] if isinstance(i, list) and i else i
            if role not in self.ids and isinstance(i, int) and 0 <= i < self.size:
                self.ids[role] = i

    def _adds_bos(self, cfg: dict) -> bool:
        if "add_bos_token" in cfg and cfg["add_bos_token"] is not None:
            return bool(cfg["add_bos_token"]) and self.bos_id() >= 0
        bos = self.bos_id()
        with_specials = self.tok.encode("a", add_special_tokens=True).ids
        return bos >= 0 and len(with_specials) > 1 and with_specials[0] == bos

    def encode(self, texts: list[str] | str, num_threads: int | None = None) -> list:
        """Ids of each text without specials (one text: its ids). `num_threads` is sentencepiece's
        argument, accepted for the shared call; the Rayon pool decides here."""
        if isinstance(texts, str):
            return self.tok.encode(texts, add_special_tokens=False).ids
        return [e.ids for e in self.tok.encode_batch_fast(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)

    def get_piece_size(self) -> int:
        return self.size

    def id_to_piece(self, i: int) -> str:
        return self.tok.id_to_token(i)

    def bos_id(self) -> int:
        return self.ids.get("bos_token", -1)

    def eos_id(self) -> int:
        return self.ids.get("eos_token", -1)

    def pad_id(self) -> int:
        return self.ids.get("pad_token", -1)

    def unk_id(self) -> int:
        return self.ids.get("unk_token", -1)


def check_model_config(config_path: Path, vocab_size: int, bos_id: int, eos_id: int, add_bos: bool,
                       tokenizer: str) -> None:
    """Fail when a model's config.json cannot take the tokens of a tokenizer: more ids than
    embedding rows, or BOS/EOS ids that differ from the ones the model was trained to see."""
    try:
        cfg = json.loads(Path(config_path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{config_path} is not valid JSON: {e}") from None
    rows = cfg.get("vocab_size")
    if isinstance(rows, int) and vocab_size > rows:
        raise ValueError(f"{config_path}: vocab_size {rows} is smaller than the {vocab_size} ids of the tokenizer "
                         f"{tokenizer}: the model has no embedding for its highest ids")
    for field, mine, used in (("eos_token_id", eos_id, True), ("bos_token_id", bos_id, add_bos)):
        theirs = cfg.get(field)
        allowed = theirs if isinstance(theirs, list) else [theirs]
        if used and theirs is not None and mine not in allowed:
            raise ValueError(f"{config_path}: {field} {theirs} but the tokenizer {tokenizer} gives "
                             f"{field.split('_')[0]}_token id {mine}: the tokenizer and the model disagree on "
                             f"special tokens")
