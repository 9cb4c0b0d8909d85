"""Trainer settings (`configs/train*.yaml`). The plan decides data and LR; this decides the rest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from curate.records.typed import build, load_yaml

DTYPES = ("auto", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")
PARALLEL = ("ddp", "fsdp")
IMPLEMENTATIONS = ("auto", "transformers")
DEFAULT_BATCH_TOKENS = 524288
"""Step size for a plan that states none (plans written before `tokens_per_step` existed)."""


@dataclass
class TrainConfig:
    """How to train; every field can be set in a YAML file passed as `--config`."""

    batch_tokens: int | None = None
    """Global tokens per optimizer step (rows x seq_len, across all ranks); a multiple of seq_len.
    None: the plan's `tokens_per_step` (`curate plan --batch-size`), else DEFAULT_BATCH_TOKENS."""
    micro_batch_rows: int = 8
    """Rows per forward/backward on one rank; gradient accumulation makes up the rest of the batch."""
    weight_decay: float = 0.1
    """AdamW decoupled weight decay on matrices (norms and biases are not decayed)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    seed: int = 0
    """Seeds the sampler's permutations and torch."""
    holdout_rows: int = 8
    """Rows held out per group for evaluation (at most a tenth of the group's rows)."""
    eval_every: int = 100
    """Evaluate the held-out rows every this many steps (and at the end); 0 disables."""
    checkpoint_every: int = 500
    """Save a training checkpoint every this many steps (and at the end); 0 saves only at the end."""
    keep_checkpoints: int = 2
    """How many recent checkpoints to keep (older ones are deleted after a new one is complete)."""
    log_every: int = 10
    """Write a metrics.jsonl line every this many steps."""
    dtype: str = "auto"
    """auto (bf16 autocast on CUDA, fp32 on CPU), bf16, or fp32. Master weights stay fp32."""
    device: str = "auto"
    """auto, cpu or cuda."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward to save memory."""
    doc_masking: bool = True
    """Stop attention crossing document boundaries inside packed rows (when segs.bin exists)."""
    parallel: str = "ddp"
    """Multi-process strategy: ddp (replicated) or fsdp (FSDP2 fully_shard, for models too big to replicate)."""
    peak_tflops: float | None = None
    """Peak dense TFLOP/s of one device for MFU; None = looked up for known GPUs (none on CPU)."""
    max_steps: int | None = None
    """Stop after this many steps (default: the plan's total tokens / batch_tokens)."""
    plots: bool = True
    """Write loss and LR plots (PNG) into the output folder at the end."""
    tensorboard: bool = True
    """Also write the metrics as TensorBoard event files (`OUT/tensorboard/`)."""
    max_shard_bytes: int = 5 << 30
    """Largest safetensors shard in saved model folders."""
    implementation: str = "auto"
    """auto: curate's own decoder for the Llama, Mistral and Qwen2 families it computes, transformers'
    AutoModelForCausalLM for any other architecture; transformers: that path for every base (to compare)."""

    def __post_init__(self) -> None:
        if self.batch_tokens is not None and int(self.batch_tokens) <= 0:
            raise ValueError(f"batch_tokens: must be a positive integer or null (the plan's step), "
                             f"got {self.batch_tokens!r}")
        if int(self.micro_batch_rows) <= 0:
            raise ValueError(f"micro_batch_rows: must be a positive integer, got {self.micro_batch_rows!r}")
        for name in ("holdout_rows", "eval_every", "checkpoint_every", "log_every", "grad_clip", "weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)!r}")
        if self.keep_checkpoints < 1:
            raise ValueError(f"keep_checkpoints: must be >= 1, got {self.keep_checkpoints!r}")
        if self.log_every == 0:
            raise ValueError("log_every: must be >= 1")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name}: must be in [0, 1), got {getattr(self, name)!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: got {self.dtype!r}; valid: {', '.join(DTYPES)}")
        if self.device not in DEVICES:
            raise ValueError(f"device: got {self.device!r}; valid: {', '.join(DEVICES)}")
        if self.implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation: got {self.implementation!r}; valid: {', '.join(IMPLEMENTATIONS)}")
        if self.parallel not in PARALLEL:
            raise ValueError(f"parallel: got {self.parallel!r}; valid: {', '.join(PARALLEL)}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise ValueError(f"max_steps: must be a positive integer or null, got {self.max_steps!r}")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"peak_tflops: must be > 0 or null, got {self.peak_tflops!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_train_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read a train YAML (or defaults when `path` is None) and apply `overrides`."""
    data: dict[str, Any] = {}
    if path is not None:
        data = load_yaml(Path(path).read_text(), str(path)) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a train config is a mapping of field: value")
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return build(TrainConfig, data, "")  # unknown fields and wrong types name the field
