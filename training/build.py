"""Everything a training run needs before its first step: the process group, the plan's sampler,
the batch geometry, the model and optimizer, and the train state (fresh, or restored from the
latest checkpoint in the output folder). Also the background reader that feeds each step.
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curate.records.plan import Plan
from curate.training import distributed
from curate.training.checkpoint import latest_checkpoint, load_checkpoint, remove_partial
from curate.training.config import TrainConfig
from curate.training.data import PlanSampler, load_groups, needs_mask, supply_table
from curate.training.metrics import MetricsLog
from curate.training.optim import build_optimizer
from curate.training.plan import check_resume, check_step_alignment, step_tokens


@dataclass(frozen=True)
class Geometry:
    """How one optimizer step of `batch_tokens` splits into rows, ranks and micro-batches."""

    seq_len: int
    batch_tokens: int
    batch_rows: int
    """Rows per step across all ranks."""
    rank_rows: int
    """Rows per step on one rank (a contiguous slice of the global batch)."""
    micro: int
    """Rows per forward/backward."""
    total_steps: int

    @property
    def n_micro(self) -> int:
        return self.rank_rows // self.micro


@dataclass
class TrainState:
    """What changes from step to step; a checkpoint saves it with the model and optimizer."""

    step: int = 0
    tokens: int = 0
    loss: float = math.nan
    """Loss of the last logged window (a resumed run that has no step left reports the saved one)."""
    sampler: dict[str, Any] = field(default_factory=dict)
    """Sampler state after the rows trained so far (the reader is already a batch ahead)."""
    phase: int | None = None
    """Phase of the last batch trained."""
    eval: dict[str, float] = field(default_factory=dict)
    """Latest held-out losses."""


@dataclass
class Trainer:
    """The parts of a run, built once by `build`."""

    cfg: TrainConfig
    dist: distributed.Dist
    plan: Plan
    sampler: PlanSampler
    geo: Geometry
    model: Any
    wrapped: Any
    """The model under DDP / FSDP2 (the model itself in one process)."""
    forward: Any
    """`wrapped`, or torch.compile of it."""
    optimizer: Any
    schedule: Any
    run_dir: Path
    out: Path
    log: MetricsLog
    quiet: bool = False
    path: str = ""
    """Which model trains: "curate decoder" or "transformers <Class>" (`hf_model.resolve`)."""
    write_tokenizer: Any = None
    """Puts the tokenizer files into a checkpoint folder (`hf_tokenizer.tokenizer_writer`); None: the run has none."""

    @property
    def fsdp(self) -> bool:
        return self.cfg.parallel == "fsdp" and self.dist.world > 1

    def autocast(self):
        import torch

        dev = self.dist.device.type
        if self.cfg.dtype == "bf16" or (self.cfg.dtype == "auto" and dev == "cuda"):
            return torch.autocast(dev, dtype=torch.bfloat16)
        return nullcontext()

    def say(self, msg: str) -> None:
        """Print on rank 0 only (every rank runs the same code, under torchrun or Ray Train)."""
        if self.dist.is_main and not self.quiet:
            console(msg)


def console(msg: str) -> None:
    """One line to stdout, not through `print`: Ray Train patches `print` in its workers to log
    every call and also echo it, so a printed table reached the driver twice, and two copies of
    rank 0's table read as one per rank."""
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


def geometry(plan: Plan, cfg: TrainConfig, world: int) -> Geometry:
    seq_len = plan.seq_len
    if cfg.batch_tokens % seq_len:
        raise ValueError(f"batch_tokens ({cfg.batch_tokens}) must be a multiple of the plan's seq_len ({seq_len})")
    batch_rows = cfg.batch_tokens // seq_len
    if batch_rows % world:
        raise ValueError(f"batch_tokens gives {batch_rows} rows per step, not divisible by {world} ranks")
    rank_rows = batch_rows // world
    micro = min(cfg.micro_batch_rows, rank_rows)
    if rank_rows % micro:
        raise ValueError(f"micro_batch_rows ({micro}) must divide the {rank_rows} rows each rank gets per step")
    total_steps = plan.phases[-1].end_token // seq_len // batch_rows
    if total_steps == 0:
        raise ValueError(f"the plan's {plan.total_tokens:,} tokens are less than one step of batch_tokens "
                         f"({cfg.batch_tokens:,}): lower batch_tokens or plan more tokens")
    check_step_alignment(plan, cfg.batch_tokens)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    return Geometry(seq_len, cfg.batch_tokens, batch_rows, rank_rows, micro, total_steps)


def check_vocab(groups: dict, vocab_size: int, base: Path) -> None:
    """Every token id in the packed files must have an embedding in the base model."""
    for g, rows in groups.items():
        if rows.vocab_size > vocab_size:
            raise ValueError(
                f"tokens/{g} was packed with a vocabulary of {rows.vocab_size} ids but the base model {base} has "
                f"vocab_size {vocab_size}: pack with the model's tokenizer, or make a base with "
                f"`curate init-model DIR --vocab-size {rows.vocab_size}`")


def check_special_tokens(run_dir: Path, base: Path) -> None:
    """A base that ships its own tokenizer must agree with the packed tokens on BOS/EOS ids (its
    config.json's bos_token_id / eos_token_id), before any step is trained."""
    from curate.stages.tokens.hf_tokenizer import check_model_config

    index = run_dir / "tokens" / "index.json"
    has_tokenizer = (base / "tokenizer.json").is_file() or (base / "tokenizer.model").is_file()
    if not (has_tokenizer and index.is_file() and (base / "config.json").is_file()):
        return
    ix = json.loads(index.read_text())
    if not ix.get("tokenizer"):  # token files written without a tokenizer (synthetic): no ids to compare
        return
    check_model_config(base / "config.json", int(ix.get("vocab_size", 0)), int(ix.get("bos_id", -1)),
                       int(ix.get("eos_id", -1)), bool(ix.get("add_bos")), f"{run_dir}/tokens ({ix.get('tokenizer')})")


def build(run_dir: Path, base: Path, plan: Plan, cfg: TrainConfig, out: Path, quiet: bool = False
          ) -> tuple[Trainer, TrainState]:
    """Join the process group, open the token groups, build or restore model, optimizer and state."""
    import torch

    from curate.training import hf_model

    batch_tokens, source = step_tokens(plan, cfg.batch_tokens)
    cfg = replace(cfg, batch_tokens=batch_tokens)  # from here on, the step size in force
    d = distributed.setup(cfg.device)
    torch.manual_seed(cfg.seed)
    if d.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for any matmul left outside bf16 autocast
    groups = load_groups(run_dir / "tokens", plan.used_groups())
    sampler = PlanSampler(plan, groups, seed=cfg.seed, holdout_rows=cfg.holdout_rows)
    geo = geometry(plan, cfg, d.world)

    if d.is_main:
        remove_partial(out)
    ckpt = latest_checkpoint(out)
    src = ckpt or base
    path = hf_model.resolve(src, cfg.implementation)
    check_vocab(groups, hf_model.vocab_size(src, path), src)
    check_special_tokens(run_dir, base)
    model = hf_model.load(src, path)
    model.activation_checkpointing = cfg.activation_checkpointing
    model.to(d.device)
    wrapped = distributed.wrap(model, d, cfg.parallel)
    schedule = plan.schedule
    fsdp = cfg.parallel == "fsdp" and d.world > 1
    optimizer = build_optimizer(model, schedule.lr_start, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps,
                                fused=d.device.type == "cuda" and not fsdp)
    state = TrainState()
    if ckpt is not None:
        saved = load_checkpoint(ckpt, model, optimizer, fsdp=fsdp)
        check_resume(ckpt, saved, plan, cfg.batch_tokens)
        sampler.load_state_dict(saved["sampler"])
        state = TrainState(step=int(saved["step"]), tokens=int(saved["tokens"]), loss=float(saved.get("loss", "nan")))
    else:
        sampler.check_epochs()
    state.sampler = sampler.state_dict()
    forward = torch.compile(wrapped) if cfg.compile else wrapped
    log = MetricsLog(out / "metrics.jsonl", enabled=d.is_main, resume_step=state.step if ckpt else None,
                     tensorboard=cfg.tensorboard)
    from curate.training.hf_tokenizer import tokenizer_writer

    t = Trainer(cfg, d, plan, sampler, geo, model, wrapped, forward, optimizer, schedule, run_dir, out, log, quiet,
                path, tokenizer_writer(run_dir, base, model.config.max_position_embeddings))
    t.say(path_line(path))
    if ckpt is not None:
        t.say(f"resuming from {ckpt} at step {state.step} ({state.tokens:,} tokens)")
    t.say(f"model: {model.num_params() / 1e6:.1f}M parameters from {src}; device {d.device} x {d.world}; "
          f"{geo.batch_rows} rows x {geo.seq_len} tokens per step ({source}), {geo.n_micro} micro-batches of "
          f"{geo.micro} per rank")
    t.say(supply_table(sampler))
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    return t, state


def path_line(path: str) -> str:
    """The line that says at the start of training which model computes the steps."""
    if path.startswith("transformers"):
        return (f"architecture: {path} (not one curate's decoder computes, or forced by implementation: "
                f"transformers; attends across packed documents; slower per token, see docs/training.md)")
    return f"architecture: {path} (document masking within packed rows)"


@dataclass
class StepBatch:
    """This rank's rows of one global batch."""

    tokens: Any
    """(rows, seq_len + 1) token ids (a torch tensor)."""
    segs: Any
    """(rows, seq_len + 1) segment numbers; 0 = padding."""
    masked: list[bool]
    """Per micro-batch: whether it needs the document mask (decided on the CPU, so the GPU never syncs on it)."""
    phase: int


class Prefetcher:
    """Draws each global batch from the sampler and reads this rank's slice in a background thread,
    so reading the memory maps overlaps the previous step's compute. Every rank draws the same
    global batch, so the ranks agree without communicating."""

    def __init__(self, t: Trainer) -> None:
        self.sampler, self.geo, self.dist, self.doc_masking = t.sampler, t.geo, t.dist, t.cfg.doc_masking
        self.lo, self.hi = self.dist.rank * self.geo.rank_rows, (self.dist.rank + 1) * self.geo.rank_rows
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending: tuple[Any, dict[str, Any]] | None = None

    def submit(self) -> None:
        """Draw the next global batch now; its rows are read in the background."""
        picks, phase = self.sampler.next_indices(self.geo.batch_rows)
        self.pending = (self.pool.submit(self._read, picks[self.lo : self.hi], phase), self.sampler.state_dict())

    def _read(self, picks: list[tuple[str, int]], phase: int) -> StepBatch:
        import torch

        b = self.sampler.read(picks, phase)
        tok, seg = torch.from_numpy(b.tokens), torch.from_numpy(b.segs)
        m = self.geo.micro
        masked = [self.doc_masking and needs_mask(b.segs[i : i + m, :-1]) for i in range(0, len(b.segs), m)]
        if self.dist.device.type == "cuda":
            tok, seg = tok.pin_memory(), seg.pin_memory()
        return StepBatch(tok, seg, masked, b.phase)

    def take(self) -> tuple[StepBatch, dict[str, Any]]:
        """The submitted batch on the device, and the sampler state once it is trained."""
        assert self.pending is not None, "take() before submit()"
        future, state = self.pending
        self.pending = None
        b = future.result()
        dev = self.dist.device
        return replace(b, tokens=b.tokens.to(dev, non_blocking=True), segs=b.segs.to(dev, non_blocking=True)), state

    def close(self) -> None:
        self.pool.shutdown()
