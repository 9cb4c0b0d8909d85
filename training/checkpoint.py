"""Training checkpoints: `OUT/checkpoints/step-000100/` = a complete Hugging Face folder + `trainer.pt`.

The model half (`config.json` of the base's architecture, safetensors, fp32 master weights, the
tokenizer files) loads directly with `transformers` (`AutoModelForCausalLM`, `AutoTokenizer`),
`curate eval` and `lm_eval --model hf`; `trainer.pt` holds what an exact resume needs: optimizer moments, step and tokens
seen (which determine the LR), the sampler state, RNG states and the settings that must not change
across a resume. Each checkpoint is written into a temporary folder and renamed into place, so a
kill at any moment leaves either the complete checkpoint or none; the latest complete one wins.
"""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path
from typing import Any

from curate.training.hf_io import replace_dir, temp_dir_beside, write_model_files

STEP_RE = re.compile(r"^step-(\d{6,})$")
TRAINER_FILE = "trainer.pt"


def rng_state() -> dict[str, Any]:
    import numpy as np
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_dirs(out_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `out_dir/checkpoints`, oldest first."""
    root = Path(out_dir) / "checkpoints"
    found = []
    for p in root.glob("step-*") if root.is_dir() else []:
        m = STEP_RE.match(p.name)
        if m and (p / TRAINER_FILE).exists() and (p / "config.json").exists():
            found.append((int(m.group(1)), p))
    return sorted(found)


def remove_partial(out_dir: Path) -> None:
    """Delete folders a killed save left behind: checkpoints' `.tmp-*` / `.old-*` and the final
    export's `.tmp-model.*` / `.old-model.*`; complete checkpoints and `model/` are untouched."""
    out_dir = Path(out_dir)
    root = out_dir / "checkpoints"
    leftovers = list(root.glob(".tmp-*")) + list(root.glob(".old-*")) if root.is_dir() else []
    if out_dir.is_dir():
        leftovers += list(out_dir.glob(".tmp-model.*")) + list(out_dir.glob(".old-model.*"))
    for p in leftovers:
        shutil.rmtree(p, ignore_errors=True)


def latest_checkpoint(out_dir: Path) -> Path | None:
    found = checkpoint_dirs(out_dir)
    return found[-1][1] if found else None


def full_state(model, optimizer, fsdp: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model state, optimizer state) as full CPU tensors; collective under FSDP (call on every rank)."""
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return model.state_dict(), optimizer.state_dict()


def save_checkpoint(out_dir: Path, step: int, model, optimizer, trainer_state: dict[str, Any],
                    fsdp: bool = False, is_main: bool = True, keep: int = 2, max_shard_bytes: int = 5 << 30,
                    write_tokenizer=None) -> Path:
    """Write checkpoint `step` atomically (rank 0 writes; every rank must call it under FSDP);
    `write_tokenizer(folder)` adds the tokenizer files, so every step loads as it is."""
    import torch

    model_sd, optim_sd = full_state(model, optimizer, fsdp)
    dest = Path(out_dir) / "checkpoints" / f"step-{step:06d}"
    if not is_main:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_dir_beside(dest)
    try:
        write_model_files(_StateView(model, model_sd), tmp, max_shard_bytes)
        if write_tokenizer is not None:
            write_tokenizer(tmp)
        torch.save({**trainer_state, "step": step, "optimizer": optim_sd, "rng": rng_state()}, tmp / TRAINER_FILE)
        replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, old in checkpoint_dirs(out_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return dest


def load_checkpoint(path: Path, model, optimizer, fsdp: bool = False) -> dict[str, Any]:
    """Restore optimizer and RNG from checkpoint `path` and return the trainer state.

    The model weights come from the same folder through `hf_io.load_model` before the model is
    wrapped (and, under FSDP, sharded), so only the optimizer is restored here.
    """
    import torch

    state = torch.load(Path(path) / TRAINER_FILE, map_location="cpu", weights_only=False)
    if fsdp:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(model, optimizer, state["optimizer"], options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state["optimizer"])
    set_rng_state(state["rng"])
    return state


class _StateView:
    """Gives `write_model_files` a model whose `state_dict()` is an already-gathered dict."""

    def __init__(self, model, sd: dict[str, Any]) -> None:
        self.config = model.config
        self.source = getattr(model, "source", None)
        self.tied_keys = getattr(model, "tied_keys", [])
        self._sd = sd

    def state_dict(self) -> dict[str, Any]:
        return self._sd
