"""The training loop: build, (resume), step through the plan, evaluate, checkpoint, finish.

`train()` is the plain function behind `curate train` and reads top to bottom: `build` opens the
plan and the token groups and makes the model, optimizer and train state (`training/build.py`);
then each optimizer step takes the LR from the plan at the tokens seen, a global batch from the
sampler (read in a background thread while the previous step computes), and runs `train_step`:
gradient accumulation over micro-batches, clipping, AdamW. Metrics, held-out evaluation and
checkpoints follow on their own schedules; `finish` writes the realised mixture, the exported
model and the plots.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from curate.records.plan import Plan
from curate.training import distributed
from curate.training.build import Prefetcher, StepBatch, Trainer, TrainState, build
from curate.training.checkpoint import save_checkpoint
from curate.training.config import TrainConfig
from curate.training.data import needs_mask
from curate.training.metrics import Progress, Timer, peak_tflops
from curate.training.model import causal_lm_loss
from curate.training.optim import lr_at_tokens, set_lr


def train(run_dir: Path, base: Path, plan_path: Path | None = None, config: TrainConfig | None = None,
          out_dir: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Continue pretraining `base` on `run_dir/tokens` following the plan; resumes from `out_dir`."""
    import torch

    cfg = config or TrainConfig()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "train"
    plan = Plan.load(Path(plan_path) if plan_path else run_dir / "plan.json")
    t, state = build(run_dir, Path(base), plan, cfg, out, quiet)
    total = t.geo.total_steps
    batches = Prefetcher(t)
    if state.step < total:
        batches.submit()
    timer, progress = Timer(), Progress(total, state.step, t.dist.is_main and not quiet)
    loss_sum = torch.zeros((), device=t.dist.device)  # summed on the device; read once per log line
    t.model.train()
    while state.step < total:
        lr = lr_at_tokens(t.schedule, state.tokens)
        t_wait = time.perf_counter()
        batch, sampler_state = batches.take()
        if state.step + 1 < total:
            batches.submit()
        timer.data += time.perf_counter() - t_wait
        grad_norm = train_step(t, batch, lr, loss_sum)
        state.step += 1
        state.tokens += t.geo.batch_tokens
        state.sampler = sampler_state
        timer.tokens += t.geo.batch_tokens
        timer.steps += 1
        if batch.phase != state.phase:
            log_mixture(t, state, announce=state.phase is not None)
            state.phase = batch.phase
        if state.step % cfg.log_every == 0 or state.step == total:
            tps = log_window(t, state, timer, loss_sum, lr, grad_norm, batch.phase)
            progress.update({"loss": f"{state.loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tps:,.0f}"})
        else:
            progress.update({})
        evaluate_and_checkpoint(t, state, timer)
    progress.close()
    batches.close()
    return finish(t, state)


def train_step(t: Trainer, batch: StepBatch, lr: float, loss_sum: Any) -> Any:
    """One optimizer step over this rank's rows; adds the step's loss to `loss_sum`, returns the grad norm.

    The loss is normalised by the global count of valid targets, so 1 and N ranks compute the same
    gradient. Gradients are reduced across ranks once per step, on the last micro-batch: FSDP2
    keeps the unsharded gradients until then, DDP skips its all-reduce inside no_sync().
    """
    import torch

    d, micro, n_micro = t.dist, t.geo.micro, t.geo.n_micro
    set_lr(t.optimizer, lr)
    valid = batch.segs[:, 1:] != 0
    n_valid = distributed.all_reduce_sum(d, valid.sum().to(torch.float32)).clamp_min(1.0)
    for m in range(n_micro):
        sl = slice(m * micro, (m + 1) * micro)
        last = m == n_micro - 1
        if t.fsdp:
            t.wrapped.set_requires_gradient_sync(last)
        sync = nullcontext() if (last or d.world == 1 or t.fsdp) else t.wrapped.no_sync()
        with sync, t.autocast():
            logits = t.forward(batch.tokens[sl, :-1], batch.segs[sl, :-1] if batch.masked[m] else None)
            loss = causal_lm_loss(logits, batch.tokens[sl, 1:], valid[sl]) / n_valid
        (loss * d.world).backward()
        loss_sum += loss.detach()
    clip = t.cfg.grad_clip if t.cfg.grad_clip > 0 else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), clip)
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    return grad_norm


def log_window(t: Trainer, state: TrainState, timer: Timer, loss_sum: Any, lr: float, grad_norm: Any,
               phase: int) -> float:
    """One metrics line for the steps since the last one (loss averaged over them), then a new window;
    returns the window's tokens/s."""
    import torch

    state.loss = float(distributed.all_reduce_sum(t.dist, loss_sum).item()) / timer.steps
    if t.dist.device.type == "cuda":
        torch.cuda.synchronize()
    dt = timer.lap()
    tps = timer.tokens / dt
    peak = (t.cfg.peak_tflops or peak_tflops(t.dist.device) or 0.0) * 1e12
    mfu = 100 * t.model.flops_per_token(t.geo.seq_len) * tps / (peak * t.dist.world) if peak else None
    t.log.log(state.step, {"train/loss": state.loss, "train/lr": lr, "train/tokens": state.tokens,
                           "train/throughput(tok/s)": tps, "train/mfu(%)": mfu, "train/grad_norm": float(grad_norm),
                           "time/data_loading(%)": 100 * timer.data / dt, "time/step(s)": dt / timer.steps,
                           "train/phase": phase})
    timer.reset()
    loss_sum.zero_()
    return tps


def evaluate_and_checkpoint(t: Trainer, state: TrainState, timer: Timer) -> None:
    """Held-out evaluation and a checkpoint when their schedules (or the last step) say so."""
    cfg, step, last = t.cfg, state.step, state.step == t.geo.total_steps
    do_eval = cfg.eval_every and (step % cfg.eval_every == 0 or last)
    do_ckpt = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or last
    if not (do_eval or do_ckpt):
        return
    # Eval and checkpoint time stays out of the throughput/MFU window; the step's queued kernels
    # finish first so they still count as training time.
    if t.dist.device.type == "cuda":
        import torch

        torch.cuda.synchronize()
    t_side = time.perf_counter()
    if do_eval:
        from curate.training.evaluate import RunEval

        # Bits per byte on the run's evaluation sets (RUN/eval/, from `curate pack`), as `curate eval`.
        state.eval = {**evaluate(t), **RunEval(t.run_dir)(t.model)}
        t.log.log(step, {**state.eval, "train/tokens": state.tokens, "time/eval(s)": time.perf_counter() - t_side})
    if do_ckpt:
        t_ckpt = time.perf_counter()
        save(t, state)
        t.log.log(step, {"time/checkpoint(s)": time.perf_counter() - t_ckpt})
    timer.exclude(time.perf_counter() - t_side)


def evaluate(t: Trainer) -> dict[str, float]:
    """Loss per valid target token on each group's held-out rows (`eval/loss/<group>`)."""
    import torch

    dev, micro = t.dist.device, t.geo.micro
    res = {}
    t.model.eval()
    with torch.no_grad(), t.autocast():
        for g in t.sampler.names:
            toks, segs = t.sampler.holdout(g)
            if len(toks) == 0:
                continue
            tot, n = 0.0, 0
            for i in range(0, len(toks), micro):
                tok = torch.from_numpy(toks[i : i + micro]).to(dev)
                seg = torch.from_numpy(segs[i : i + micro]).to(dev)
                valid = seg[:, 1:] != 0
                masked = t.cfg.doc_masking and needs_mask(segs[i : i + micro, :-1])
                logits = t.model(tok[:, :-1], seg[:, :-1] if masked else None)
                tot += float(causal_lm_loss(logits, tok[:, 1:], valid))
                n += int(valid.sum())
            res[f"eval/loss/{g}"] = tot / max(n, 1)
    t.model.train()
    return res


def save(t: Trainer, state: TrainState) -> None:
    """Checkpoint `state.step` (every rank calls it: FSDP gathers the full state collectively)."""
    trainer_state = {"tokens": state.tokens, "sampler": state.sampler, "batch_tokens": t.geo.batch_tokens,
                     "seq_len": t.geo.seq_len, "plan": t.plan.fingerprint(), "loss": state.loss}
    save_checkpoint(t.out, state.step, t.model, t.optimizer, trainer_state, fsdp=t.fsdp, is_main=t.dist.is_main,
                    keep=t.cfg.keep_checkpoints, max_shard_bytes=t.cfg.max_shard_bytes,
                    write_tokenizer=t.write_tokenizer)
    distributed.barrier(t.dist)


def log_mixture(t: Trainer, state: TrainState, announce: bool) -> None:
    """Log (and, when `announce`, print) the realised vs planned mixture of every phase started so far."""
    for ph in t.sampler.realised(state.sampler):
        if not ph["rows"]:
            continue
        t.log.log(state.step, {**{f"data/realised/{ph['phase']}/{g}": v for g, v in ph["realised"].items()},
                               **{f"data/planned/{ph['phase']}/{g}": v for g, v in ph["planned"].items()}})
        if announce:
            pairs = ", ".join(f"{g} {ph['realised'][g]:.3f}/{w:.3f}" for g, w in ph["planned"].items() if w > 0)
            t.say(f"mixture {ph['phase']} ({ph['rows']} rows) realised/planned: {pairs}")


def finish(t: Trainer, state: TrainState) -> dict[str, Any]:
    """Final mixture, `OUT/mixture.json`, the exported model, plots; leave the process group."""
    log_mixture(t, state, announce=True)
    if t.dist.is_main:
        (t.out / "mixture.json").write_text(json.dumps(t.sampler.realised(state.sampler), indent=2))
        if state.step > 0:
            export_final(t.out, state.step, t.write_tokenizer)
        if t.cfg.plots:
            from curate.training.plots import plot_run

            plot_run(t.out, t.plan)
    t.log.close()
    distributed.teardown(t.dist)
    return {"steps": state.step, "tokens": state.tokens, "loss": state.loss, "out_dir": str(t.out),
            "architecture": t.path, **state.eval}


def export_final(out: Path, step: int, write_tokenizer) -> None:
    """`OUT/model/`: the final checkpoint's Hugging Face files without the optimizer state, with
    the tokenizer (written again: a checkpoint from before checkpoints carried one may be the last)."""
    import shutil

    from curate.training.hf_io import replace_dir, temp_dir_beside

    ckpt = out / "checkpoints" / f"step-{step:06d}"
    tmp = temp_dir_beside(out / "model")
    for f in ckpt.iterdir():
        if f.name != "trainer.pt":
            shutil.copy2(f, tmp / f.name)
    (tmp / "source_checkpoint.txt").write_text(ckpt.name + "\n")
    if write_tokenizer is not None:
        write_tokenizer(tmp)
    replace_dir(tmp, out / "model")
