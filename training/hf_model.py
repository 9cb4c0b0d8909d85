"""Bases curate's own decoder does not compute, trained as transformers itself builds them.

Llama, Mistral and Qwen2 folders run on `training/model.py` (document masking, no per-call
overhead). Any other causal LM transformers can build from `config.json` offline (GPT-NeoX, Phi,
Gemma, OPT, GPT-2 ..., and Llama-family configs with a RoPE type or activation curate's decoder
refuses) runs as `AutoModelForCausalLM`, wrapped in `HFCausalLM` so the same loop, sampler,
optimizer, checkpoints and bits-per-byte scoring drive it. `implementation: transformers` in the
train config forces this path for a covered family too, to compare the two.

The transformers path attends across the documents packed into one row: transformers' models take
a padding mask, not the block-diagonal one curate's decoder builds from `segs`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

CURATE = "curate decoder"
IMPLEMENTATIONS = ("auto", "transformers")


def resolve(folder: Path, implementation: str = "auto") -> str:
    """Which path a model folder takes: CURATE, or "transformers <Class>". One line naming
    config.json and the field when neither can build it."""
    from curate.training.hf_io import read_config

    reason = "forced by implementation: transformers"
    if implementation != "transformers":
        try:
            read_config(folder)
            return CURATE
        except ValueError as e:
            reason = str(e)
    return f"transformers {transformers_class(Path(folder), reason)}"


def transformers_class(folder: Path, reason: str) -> str:
    """The AutoModelForCausalLM class transformers builds for `folder/config.json` (no remote code)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    path = folder / "config.json"
    model_type = json.loads(path.read_text()).get("model_type")
    name = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type or "")
    if name is None:
        raise ValueError(f"{path}: model_type {model_type!r} is neither one curate's decoder computes ({reason}) "
                         f"nor a causal LM transformers {transformers.__version__} can build")
    try:
        transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{path}: transformers cannot read this {model_type!r} config: {e}") from None
    return name


def vocab_size(folder: Path, label: str) -> int:
    from curate.training.hf_io import read_config

    if label == CURATE:
        return read_config(folder).vocab_size
    import transformers

    return int(transformers.AutoConfig.from_pretrained(folder, local_files_only=True).vocab_size)


def load(folder: Path, label: str):
    """The model of `folder` on the path `resolve` chose (fp32 master weights either way)."""
    from curate.training.hf_io import load_model

    if label == CURATE:
        return load_model(folder)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # a bar per load would interleave with training's lines
    hf = transformers.AutoModelForCausalLM.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
    source = json.loads((Path(folder) / "config.json").read_text())
    return HFCausalLM(hf, source)


def load_auto(folder: Path, implementation: str = "auto"):
    return load(folder, resolve(folder, implementation))


class HFCausalLM(nn.Module):
    """A transformers causal LM with the interface the trainer and scorer call on curate's decoder:
    `model(ids, segs) -> logits`, `hidden`, `lm_head`, `num_params`, `flops_per_token`."""

    def __init__(self, hf: nn.Module, source: dict[str, Any]) -> None:
        super().__init__()
        self.hf = hf
        self.config = hf.config
        self.source = source
        """The base's config.json as read, saved back as it is (`hf_io.write_model_files`)."""
        params = {n for n, _ in hf.named_parameters()} | {n for n, _ in hf.named_buffers()}
        # State-dict entries that repeat a tied tensor (GPT-2's lm_head.weight is wte.weight): saved
        # once, as transformers saves them, and tied again by from_pretrained.
        self.tied_keys = sorted(set(hf.state_dict()) - params)
        self._checkpointing = False
        self.context = getattr(hf.config.get_text_config(), "max_position_embeddings", None)
        """The positions the model was built for: GPT-2 and OPT have no others."""

    def forward(self, ids: torch.Tensor, segs: torch.Tensor | None = None) -> torch.Tensor:
        return self.hf(input_ids=ids, use_cache=False).logits

    def hidden(self, ids: torch.Tensor, segs: torch.Tensor | None = None) -> torch.Tensor:
        return self.hf.base_model(input_ids=ids, use_cache=False).last_hidden_state

    @property
    def lm_head(self):
        """Hidden states to logits, as the model's own forward does after its body (a function,
        not a module, so the output embedding is not registered twice)."""
        out, c = self.hf.get_output_embeddings(), self.config

        def head(h: torch.Tensor) -> torch.Tensor:
            logits = out(h)
            if getattr(c, "logit_scale", None):  # Cohere
                logits = logits * c.logit_scale
            cap = getattr(c, "final_logit_softcapping", None)  # Gemma 2/3
            return torch.tanh(logits / cap) * cap if cap else logits

        return head

    @property
    def activation_checkpointing(self) -> bool:
        return self._checkpointing

    @activation_checkpointing.setter
    def activation_checkpointing(self, on: bool) -> None:
        if on:
            self.hf.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        elif self._checkpointing:
            self.hf.gradient_checkpointing_disable()
        self._checkpointing = bool(on)

    def blocks(self) -> list[nn.Module]:
        """The repeated decoder blocks (FSDP shards each one)."""
        names = set(getattr(self.hf, "_no_split_modules", None) or [])
        return [m for m in self.hf.modules() if type(m).__name__ in names]

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.hf.get_input_embeddings().weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """6N plus attention scores (PaLM, arXiv:2204.02311, App. B), as curate's decoder counts."""
        c = self.config.get_text_config()
        out = self.hf.get_output_embeddings()
        tied = out is not None and out.weight is self.hf.get_input_embeddings().weight
        n = self.num_params(exclude_embeddings=True) + (out.weight.numel() if tied else 0)
        return 6.0 * n + 12.0 * c.num_hidden_layers * c.hidden_size * seq_len
