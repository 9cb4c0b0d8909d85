"""A Llama-architecture decoder (RMSNorm, RoPE, SwiGLU, grouped-query attention).

Module and parameter names mirror Hugging Face's `LlamaForCausalLM` (`model.layers.0.self_attn.q_proj`
...) so a Hugging Face state dict loads without renaming (`training/hf_io.py`). Attention goes
through `torch.nn.functional.scaled_dot_product_attention`: with no document boundaries it takes
the causal fast path (flash / memory-efficient kernels on CUDA); with boundaries it passes a
block-diagonal causal mask so a token never attends across documents packed into one row
("intra-document masking", Llama 3 report, arXiv:2407.21783 §3.2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelConfig:
    """Shape of the decoder; field names follow Hugging Face's `LlamaConfig`."""

    vocab_size: int = 32000
    """Number of token embeddings (must cover every id in the token files)."""
    hidden_size: int = 768
    """Width of the residual stream."""
    intermediate_size: int = 2048
    """Width of the SwiGLU hidden layer."""
    num_hidden_layers: int = 12
    """Number of decoder blocks."""
    num_attention_heads: int = 12
    """Query heads."""
    num_key_value_heads: int = 12
    """Key/value heads (grouped-query attention when fewer than the query heads)."""
    head_dim: int | None = None
    """Per-head width; defaults to hidden_size // num_attention_heads."""
    max_position_embeddings: int = 2048
    """Longest sequence the RoPE tables are built for (grown on demand)."""
    rms_norm_eps: float = 1e-5
    """Epsilon inside RMSNorm."""
    rope_theta: float = 10000.0
    """RoPE base frequency."""
    rope_scaling: dict[str, Any] | None = None
    """Hugging Face RoPE scaling block; `default` and `llama3` types are supported."""
    tie_word_embeddings: bool = False
    """Share the input embedding with the output projection."""
    attention_bias: bool = False
    """Bias on q/k/v/o projections (some Llama variants)."""
    mlp_bias: bool = False
    """Bias on the SwiGLU projections."""
    qkv_bias: bool = False
    """Bias on q/k/v only (Qwen2); not a config.json key, set from the model_type."""
    attention_window: int | None = None
    """Sliding-window size (Mistral, Qwen2 with use_sliding_window): rows longer than it are refused,
    since within it sliding-window and full causal attention are the same. Not a config.json key."""
    bos_token_id: int | None = 1
    """Recorded in config.json for downstream tools."""
    eos_token_id: int | None = 2
    """Recorded in config.json for downstream tools."""
    initializer_range: float = 0.02
    """Std of the normal init used for random models."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Other config.json keys, written back unchanged on save."""
    source: dict[str, Any] | None = None
    """The base's config.json as read: saved back as it is, so a continued model keeps its
    architecture and every config field (None: a model curate made, written as a Llama)."""

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                     "num_attention_heads", "num_key_value_heads", "max_position_embeddings"):
            if int(getattr(self, name)) <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"ModelConfig.num_key_value_heads ({self.num_key_value_heads}) must divide "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError("ModelConfig.hidden_size must be a multiple of num_attention_heads when head_dim is unset")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        kind = (self.rope_scaling or {}).get("rope_type", (self.rope_scaling or {}).get("type", "default"))
        if kind not in ("default", "llama3"):
            raise ValueError(f"ModelConfig.rope_scaling type {kind!r} is not supported (valid: default, llama3)")


# Sizes for `curate init-model`: 125m/350m follow GPT-3 Table 2.1 widths and depths (arXiv:2005.14165).
SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
    "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4),
    "350m": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=4),
}


def inv_frequencies(cfg: ModelConfig) -> torch.Tensor:
    """RoPE inverse frequencies, with Llama 3's long-context rescaling when configured."""
    dim = cfg.head_dim
    inv = 1.0 / (cfg.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    rs = cfg.rope_scaling or {}
    if rs.get("rope_type", rs.get("type")) != "llama3":
        return inv
    # Llama 3.1 frequency-dependent scaling (as in Hugging Face `_compute_llama3_parameters`).
    factor, lo, hi = rs["factor"], rs.get("low_freq_factor", 1.0), rs.get("high_freq_factor", 4.0)
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > lo_wl, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= hi_wl) & (wavelen <= lo_wl)
    return torch.where(medium, smoothed, scaled)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in float32 as Hugging Face does, then cast back (keeps bf16 training stable).
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        bias = cfg.attention_bias or cfg.qkv_bias
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, cfg.hidden_size, bias=cfg.attention_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, self.n_heads * self.head_dim))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=cfg.mlp_bias)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=cfg.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SwiGLU (Shazeer 2020, arXiv:2002.05202).
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Body(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class LlamaModel(nn.Module):
    """Decoder-only LM; `forward(ids, segs)` returns logits (B, T, vocab).

    `segs` (B, T) segment numbers mask attention across packed documents; pass None for plain
    causal attention (exact when every row is one document: see `document_mask`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = Body(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.register_buffer("inv_freq", inv_frequencies(cfg), persistent=False)
        self.activation_checkpointing = False

    def reset_parameters(self, seed: int = 0) -> None:
        """Random init (normal, std = initializer_range; norms at 1) for demo and test bases."""
        g = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("layernorm.weight") or name == "model.norm.weight":
                    p.fill_(1.0)
                elif name.endswith(".bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * self.config.initializer_range)

    def rope(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(t, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(device=device, dtype=torch.float32))
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def forward(self, ids: torch.Tensor, segs: torch.Tensor | None = None) -> torch.Tensor:
        return self.lm_head(self.hidden(ids, segs))

    def hidden(self, ids: torch.Tensor, segs: torch.Tensor | None = None) -> torch.Tensor:
        window = self.config.attention_window
        if window and ids.shape[1] > window:
            raise ValueError(f"a sequence of {ids.shape[1]} tokens is longer than the model's sliding window "
                             f"({window}); use rows (seq_len) and scoring windows (block) of at most {window}")
        x = self.model.embed_tokens(ids)
        cos, sin = self.rope(ids.shape[1], ids.device)
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        # No data-dependent check here (it would sync the GPU): segs=None means plain causal.
        mask = None if segs is None else segment_mask(segs)
        for layer in self.model.layers:
            if self.activation_checkpointing and self.training:
                from torch.utils.checkpoint import checkpoint

                x = checkpoint(layer, x, cos, sin, mask, use_reentrant=False)
            else:
                x = layer(x, cos, sin, mask)
        return self.model.norm(x)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.model.embed_tokens.weight.numel()
        return n

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token: 6N plus attention scores (PaLM, arXiv:2204.02311, App. B)."""
        c = self.config
        # The output projection is a matmul even when it shares the embedding's weights.
        n = self.num_params(exclude_embeddings=True) + (self.lm_head.weight.numel() if c.tie_word_embeddings else 0)
        return 6.0 * n + 12.0 * c.num_hidden_layers * c.num_attention_heads * c.head_dim * seq_len


def document_mask(segs: torch.Tensor | None) -> torch.Tensor | None:
    """`segment_mask(segs)`, or None when plain causal suffices (every row is a single segment).

    Plain causal is exact then, and the fast kernels are used. Deciding reads the tensor's values
    (a device sync on GPU, a graph break under torch.compile), so the forward pass never calls
    this: the trainer decides per micro-batch on the CPU (`training.data.needs_mask`) and passes
    segs=None for single-segment micro-batches.
    """
    if segs is None or bool((segs == segs[:, :1]).all()):
        return None
    return segment_mask(segs)


def segment_mask(segs: torch.Tensor) -> torch.Tensor:
    """Boolean (B, 1, T, T) mask: causal and within one segment.

    Padding (segment 0) attends only to padding; its targets are ignored by the loss.
    """
    t = segs.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segs.device).tril()
    same = segs[:, None, :, None] == segs[:, None, None, :]
    return same & causal


def causal_lm_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Sum of token cross-entropies over valid targets (the caller divides by the batch's count)."""
    losses = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none")
    return (losses * valid.reshape(-1).to(losses.dtype)).sum()
