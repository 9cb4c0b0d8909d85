"""Hugging Face Llama folders: `config.json` + safetensors (single file or sharded with an index).

A folder written here loads with `transformers.LlamaForCausalLM.from_pretrained`, and a folder
written by `transformers` (or downloaded from the Hub) loads here, so a real checkpoint can be
continued and the result used downstream. Writes are atomic: everything goes to a temporary
sibling folder that is renamed into place when complete.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
from dataclasses import fields
from pathlib import Path
from typing import Any

from curate.training.model import SIZES, LlamaModel, ModelConfig

INTERNAL = {"extra", "source", "qkv_bias", "attention_window"}  # ModelConfig fields that are not config.json keys
CONFIG_KEYS = {f.name for f in fields(ModelConfig)} - INTERNAL
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
# The families curate's own model computes exactly (forward equal to transformers' in fp32), by
# config.json model_type, and the class transformers loads each as.
FAMILIES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}


def _rope_fields(d: dict[str, Any]) -> dict[str, Any]:
    """rope_theta / rope_scaling in the spelling ModelConfig reads, from either transformers 4
    (`rope_theta`, `rope_scaling`) or 5 (`rope_parameters`)."""
    d = dict(d)
    rp = d.get("rope_parameters") or {}
    if "rope_theta" not in d and "rope_theta" in rp:
        d["rope_theta"] = rp["rope_theta"]
    if d.get("rope_scaling") is None and rp.get("rope_type", "default") != "default":
        d["rope_scaling"] = rp
    rs = d.get("rope_scaling")
    if isinstance(rs, dict) and "type" in rs and "rope_type" not in rs:
        d["rope_scaling"] = {**{k: v for k, v in rs.items() if k != "type"}, "rope_type": rs["type"]}
    return d


def config_from_hf(d: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """ModelConfig from a Hugging Face `config.json` dict; refuses architectures outside FAMILIES
    and settings curate's model does not compute (naming `where` and the field)."""
    model_type = d.get("model_type", "llama")
    if model_type not in FAMILIES:
        raise ValueError(f"{where}: model_type {model_type!r} is not supported (valid: {', '.join(FAMILIES)})")
    source = dict(d)
    d = _rope_fields(d)
    eos = d.get("eos_token_id")
    kwargs = {k: d[k] for k in CONFIG_KEYS if d.get(k) is not None}
    if isinstance(eos, list):
        kwargs["eos_token_id"] = eos[0]
    kwargs.setdefault("num_key_value_heads", d.get("num_attention_heads", 12))
    if d.get("hidden_act", "silu") != "silu":
        raise ValueError(f"{where}: hidden_act {d['hidden_act']!r} is not supported (valid: silu)")
    window = d.get("sliding_window") if model_type == "mistral" or d.get("use_sliding_window") else None
    kwargs.update(qkv_bias=model_type == "qwen2", attention_window=window)
    if model_type == "qwen2":
        kwargs.update(attention_bias=False, mlp_bias=False)  # Qwen2's bias is on q/k/v only
    extra = {k: v for k, v in d.items() if k not in CONFIG_KEYS}
    try:
        return ModelConfig(**kwargs, extra=extra, source=source)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def config_to_hf(cfg: ModelConfig) -> dict[str, Any]:
    """config.json of a model: the base's own, as it was read (weights are saved in fp32), or for
    a model curate made, a Llama config."""
    if cfg.source is not None:
        return as_saved(cfg.source)
    d = dict(cfg.extra)
    for k in CONFIG_KEYS:
        d[k] = getattr(cfg, k)
    d.update(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu", torch_dtype="float32",
             dtype="float32")
    d.setdefault("attention_dropout", 0.0)
    d.setdefault("pretraining_tp", 1)
    d.setdefault("use_cache", True)
    # Both spellings, so transformers 4.x and 5.x read the same RoPE.
    d["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.rope_theta, **(cfg.rope_scaling or {})}
    return d


def as_saved(source: dict[str, Any]) -> dict[str, Any]:
    """A base's config.json as read, with the dtype of the saved (fp32) weights."""
    d = dict(source)
    for k in [k for k in ("torch_dtype", "dtype") if k in d] or ["dtype"]:
        d[k] = "float32"
    return d


def read_config(folder: Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    if not path.exists():
        raise FileNotFoundError(f"{folder} is not a model folder: config.json is missing")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    return config_from_hf(d, str(path))


def load_state_dict(folder: Path) -> dict[str, Any]:
    """All tensors of a folder (sharded via the index file, or one model.safetensors)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / INDEX).exists():
        files = sorted(set(json.loads((folder / INDEX).read_text())["weight_map"].values()))
    elif (folder / WEIGHTS).exists():
        files = [WEIGHTS]
    else:
        found = sorted(p.name for p in folder.glob("*"))
        raise FileNotFoundError(f"{folder} has no {WEIGHTS} or {INDEX} (found: {found}); .bin weights are not supported")
    sd: dict[str, Any] = {}
    for name in files:
        sd.update(load_file(str(folder / name)))
    return sd


def load_model(folder: Path, dtype=None) -> LlamaModel:
    """Build a LlamaModel from a Hugging Face Llama folder (or one of curate's checkpoints)."""
    import torch

    cfg = read_config(folder)
    model = LlamaModel(cfg)
    sd = load_state_dict(folder)
    sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
    if cfg.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    elif "lm_head.weight" not in sd and "model.embed_tokens.weight" in sd:
        raise ValueError(f"{folder}: lm_head.weight is missing but tie_word_embeddings is false")
    own = model.state_dict()
    if cfg.tie_word_embeddings:
        own.pop("lm_head.weight", None)
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise ValueError(f"{folder}: weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})")
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise ValueError(f"{folder}: {k} has shape {tuple(v.shape)}, config implies {tuple(own[k].shape)}")
    model.load_state_dict({k: v.to(dtype or torch.float32) for k, v in sd.items()}, strict=False)
    return model


def save_model(model: LlamaModel, folder: Path, max_shard_bytes: int = 5 << 30) -> Path:
    """Write `model` as a Hugging Face Llama folder, atomically; shards above `max_shard_bytes`."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(folder)
    try:
        write_model_files(model, tmp, max_shard_bytes)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_model_files(model: LlamaModel, folder: Path, max_shard_bytes: int = 5 << 30) -> None:
    from safetensors.torch import save_file

    cfg = model.config
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if isinstance(cfg, ModelConfig):
        conf = config_to_hf(cfg)
        if cfg.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
    else:  # a transformers model on the fallback path (`hf_model.HFCausalLM`): its own names, tied once
        conf = as_saved(model.source)
        sd = {k.removeprefix("hf."): v for k, v in sd.items()}
        for k in model.tied_keys:
            sd.pop(k, None)
    (folder / "config.json").write_text(json.dumps(conf, indent=2, sort_keys=True) + "\n")
    shards: list[dict[str, Any]] = [{}]
    size = 0
    for k in sorted(sd):
        nbytes = sd[k].numel() * sd[k].element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][k] = sd[k]
        size += nbytes
    # safetensors creates its files mode 0o600 whatever the umask; the folder was made under the
    # umask (temp_dir_beside), so its mode less the execute bits is what the umask gives a file.
    file_mode = stat.S_IMODE(folder.stat().st_mode) & 0o666
    if len(shards) == 1:
        save_file(shards[0], str(folder / WEIGHTS), metadata={"format": "pt"})
        os.chmod(folder / WEIGHTS, file_mode)
        return
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(folder / name), metadata={"format": "pt"})
        os.chmod(folder / name, file_mode)
        for k, v in shard.items():
            weight_map[k] = name
            total += v.numel() * v.element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def temp_dir_beside(dest: Path) -> Path:
    """A new, empty folder next to `dest`, to be renamed onto it when complete. Made with mode
    0o777 so the umask applies as for any folder the user makes: mkdtemp's 0o700 would hide
    checkpoints and exported models from other users of shared storage (a Megatron or eval job)."""
    while True:
        tmp = dest.parent / f".tmp-{dest.name}.{secrets.token_hex(4)}"
        try:
            tmp.mkdir(0o777)
            return tmp
        except FileExistsError:
            continue


def replace_dir(tmp: Path, dest: Path) -> None:
    """Move a complete folder into place; an existing one is swapped out, then removed."""
    for p in tmp.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    if dest.exists():
        old = dest.with_name(f".old-{dest.name}.{os.getpid()}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, dest)


def init_model(out_dir: Path, size: str = "tiny", vocab_size: int = 32000, seed: int = 0,
               max_position_embeddings: int = 2048, tie_word_embeddings: bool = False) -> Path:
    """Write a randomly initialised Llama of a named size as a Hugging Face folder."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    cfg = ModelConfig(vocab_size=vocab_size, max_position_embeddings=max_position_embeddings,
                      tie_word_embeddings=tie_word_embeddings, **SIZES[size])
    model = LlamaModel(cfg)
    model.reset_parameters(seed)
    return save_model(model, out_dir)


def init_like(base: Path, out_dir: Path, size: str = "tiny", seed: int = 0,
              max_position_embeddings: int | None = None) -> Path:
    """A random model of `base`'s architecture and tokenizer at a named size (a proxy for ladders
    and mixture search): the base's config.json with the size fields replaced, and its tokenizer
    files copied as they are."""
    from curate.stages.tokens.tokenizers import HF_TOKENIZER_FILES

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    path = Path(base) / "config.json"
    read_config(base)  # the base must be a supported architecture
    d = {**json.loads(path.read_text()), **SIZES[size]}
    d["head_dim"] = d["hidden_size"] // d["num_attention_heads"] if "head_dim" in d else None
    n = d["num_hidden_layers"]
    if isinstance(d.get("layer_types"), list) and d["layer_types"]:
        d["layer_types"] = [d["layer_types"][min(i, len(d["layer_types"]) - 1)] for i in range(n)]
    if "max_window_layers" in d:
        d["max_window_layers"] = min(int(d["max_window_layers"]), n)
    if max_position_embeddings:
        d["max_position_embeddings"] = max_position_embeddings
    d = {k: v for k, v in d.items() if v is not None or k != "head_dim"}
    model = LlamaModel(config_from_hf(d, str(path)))
    model.reset_parameters(seed)
    save_model(model, out_dir)
    for name in HF_TOKENIZER_FILES:
        if (Path(base) / name).is_file():
            shutil.copyfile(Path(base) / name, Path(out_dir) / name)
    return Path(out_dir)
