"""The training loop: build, (resume), step through the plan, evaluate, checkpoint, plot.

`train()` is the plain function behind `curate train`. It reads top to bottom: open the plan and
the token groups, build the model from the base (or the latest checkpoint in `out_dir`), then
for each optimizer step: LR from the plan at the tokens seen, a global batch from the sampler
(read in a background thread while the previous step computes), gradient accumulation over
micro-batches, clipping, AdamW, and metrics.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from training import distributed
from training.checkpoint import latest_checkpoint, load_checkpoint, remove_partial, save_checkpoint
from training.config import TrainConfig
from training.data import PlanSampler, load_groups, needs_mask, supply_table
from training.metrics import MetricsLog, Progress, Timer, peak_tflops
from training.model import causal_lm_loss
from training.optim import build_optimizer, lr_at_tokens, plan_schedule, set_lr


def read_plan(path: Path) -> dict[str, Any]:
    """Load and validate plan.json (`mixtures.schema.validate_plan`: schema, phases tile the plan,
    every phase gives weights and tokens for exactly the plan's groups)."""
    from mixtures.schema import validate_plan

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run `curate plan` first or pass --plan")
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): re-run `curate plan`") from None
    try:
        validate_plan(plan)
    except ValueError as e:  # PlanValidationError
        raise ValueError(f"{path}: {e}") from None
    return plan


def plan_fingerprint(plan: dict[str, Any]) -> dict[str, Any]:
    """What a resume must not change: seq_len and hashes of the schedule, the phases and the groups.

    The LR comes from the schedule at the tokens seen and the sampler state indexes the phases, so
    resuming against a re-planned plan.json would jump the LR or fail mid-run; the caller compares
    fingerprints and refuses instead. Only the fields the trainer reads are hashed, so re-writing an
    identical plan (or one whose reporting fields changed) still resumes.
    """
    def digest(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]

    phases = [{k: ph.get(k) for k in ("name", "start_token", "end_token", "weights")} for ph in plan["phases"]]
    groups = [{"name": g["name"], "max_epochs": g.get("max_epochs")} for g in plan["groups"]]
    sched = dict(plan["schedule"])
    sched.setdefault("total_tokens", plan["total_tokens"])
    return {"seq_len": int(plan["seq_len"]), "schedule": digest(sched), "phases": digest(phases), "groups": digest(groups)}


def check_resume(ckpt: Path, state: dict[str, Any], plan: dict[str, Any], batch_tokens: int) -> None:
    """Refuse to resume `ckpt` with another batch_tokens or against a different plan."""
    if state["batch_tokens"] != batch_tokens or state["seq_len"] != int(plan["seq_len"]):
        raise ValueError(f"{ckpt} was trained with batch_tokens {state['batch_tokens']} / seq_len {state['seq_len']}; "
                         f"resume with the same values or use a new --out")
    saved = state.get("plan")
    if saved is None:  # a checkpoint written before plan fingerprints were saved
        return
    now = plan_fingerprint(plan)
    changed = [k for k in now if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"{ckpt} was trained with a different plan.json ({', '.join(changed)} changed): a resume "
                         f"continues the same plan; restore the plan it was started with, or train the new plan "
                         f"into a new --out (use --base {ckpt} to start from these weights)")


def check_step_alignment(plan: dict[str, Any], batch_tokens: int) -> None:
    """Every phase boundary (and the end) must fall on a step boundary of `batch_tokens`.

    The LR is set once per step and a step's rows are drawn together, so a boundary inside a step
    would run that step at the previous phase's LR, and a partial last step would drop its tokens.
    """
    per_step = plan.get("tokens_per_step")
    for ph in plan["phases"]:
        end = int(ph["end_token"])
        if end % batch_tokens:
            what = "the plan ends" if ph is plan["phases"][-1] else f"phase {ph['name']!r} ends"
            seq = int(plan["seq_len"])
            fix = (f"re-plan with `curate plan ... --seq-len {seq} --batch-size {max(batch_tokens // seq, 1)}` "
                   f"(batch_tokens / seq_len) and a --tokens that is a multiple of {batch_tokens:,}")
            if per_step and per_step != batch_tokens:
                fix += f", or train with batch_tokens={per_step}, the step this plan was made for"
            raise ValueError(f"{what} at token {end:,}, which is not a multiple of batch_tokens ({batch_tokens:,}); "
                             f"{fix}")


def check_vocab(groups: dict, vocab_size: int, base: Path) -> None:
    """Every token id in the packed files must have an embedding in the base model."""
    for g, rows in groups.items():
        if rows.vocab_size > vocab_size:
            raise ValueError(
                f"tokens/{g} was packed with a vocabulary of {rows.vocab_size} ids but the base model {base} has "
                f"vocab_size {vocab_size}: pack with the model's tokenizer, or make a base with "
                f"`curate init-model DIR --vocab-size {rows.vocab_size}`")


def train(run_dir: Path, base: Path, plan_path: Path | None = None, config: TrainConfig | None = None,
          out_dir: Path | None = None, quiet: bool = False) -> dict[str, Any]:
    """Continue pretraining `base` on `run_dir/tokens` following the plan; resumes from `out_dir`."""
    import torch

    from training.hf_io import load_model, read_config

    cfg = config or TrainConfig()
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir else run_dir / "train"
    plan = read_plan(Path(plan_path) if plan_path else run_dir / "plan.json")
    d = distributed.setup(cfg.device)
    torch.manual_seed(cfg.seed)
    if d.device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 for any matmul left outside bf16 autocast
    say = print if (d.is_main and not quiet) else (lambda *a, **k: None)

    # -- data -----------------------------------------------------------------------------------
    used = sorted({g for ph in plan["phases"] for g, w in ph["weights"].items() if w > 0})
    groups = load_groups(run_dir / "tokens", used)
    sampler = PlanSampler(plan, groups, seed=cfg.seed, holdout_rows=cfg.holdout_rows)
    seq_len = sampler.seq_len
    if cfg.batch_tokens % seq_len:
        raise ValueError(f"batch_tokens ({cfg.batch_tokens}) must be a multiple of the plan's seq_len ({seq_len})")
    batch_rows = cfg.batch_tokens // seq_len
    if batch_rows % d.world:
        raise ValueError(f"batch_tokens gives {batch_rows} rows per step, not divisible by {d.world} ranks")
    rank_rows = batch_rows // d.world
    micro = min(cfg.micro_batch_rows, rank_rows)
    if rank_rows % micro:
        raise ValueError(f"micro_batch_rows ({micro}) must divide the {rank_rows} rows each rank gets per step")
    total_steps = sampler.total_rows // batch_rows
    if total_steps == 0:
        raise ValueError(f"the plan's {plan['total_tokens']:,} tokens are less than one step of batch_tokens "
                         f"({cfg.batch_tokens:,}): lower batch_tokens or plan more tokens")
    check_step_alignment(plan, cfg.batch_tokens)
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    schedule = plan_schedule(plan)

    # -- model, optimizer, resume -------------------------------------------------------------------
    if d.is_main:
        remove_partial(out)
    ckpt = latest_checkpoint(out)
    base = Path(base)
    check_vocab(groups, read_config(ckpt or base).vocab_size, ckpt or base)
    model = load_model(ckpt or base)
    model.activation_checkpointing = cfg.activation_checkpointing
    model.to(d.device)
    fsdp = cfg.parallel == "fsdp" and d.world > 1
    wrapped = distributed.wrap(model, d, cfg.parallel)
    optimizer = build_optimizer(model, schedule.lr_start, cfg.weight_decay, (cfg.beta1, cfg.beta2), cfg.eps,
                                fused=d.device.type == "cuda" and not fsdp)
    step, tokens, resumed_loss = 0, 0, float("nan")
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, fsdp=fsdp)
        check_resume(ckpt, state, plan, cfg.batch_tokens)
        sampler.load_state_dict(state["sampler"])
        step, tokens = int(state["step"]), int(state["tokens"])
        resumed_loss = float(state.get("loss", "nan"))  # reported if no step is left to run
        say(f"resuming from {ckpt} at step {step} ({tokens:,} tokens)")
    else:
        sampler.check_epochs()
    forward = torch.compile(wrapped) if cfg.compile else wrapped
    use_bf16 = cfg.dtype == "bf16" or (cfg.dtype == "auto" and d.device.type == "cuda")
    autocast = (lambda: torch.autocast(d.device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext

    say(f"model: {model.num_params() / 1e6:.1f}M parameters from {ckpt or base}; device {d.device} x {d.world}; "
        f"{batch_rows} rows x {seq_len} tokens per step, {rank_rows // micro} micro-batches of {micro} per rank")
    say(supply_table(plan, sampler))
    log = MetricsLog(out / "metrics.jsonl", enabled=d.is_main, resume_step=step if ckpt else None)
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    peak = (cfg.peak_tflops or peak_tflops(d.device) or 0.0) * 1e12
    flops_tok = model.flops_per_token(seq_len)

    def evaluate() -> dict[str, float]:
        model.eval()
        res = {}
        with torch.no_grad(), autocast():
            for g in sampler.names:
                toks, segs = sampler.holdout(g)
                if len(toks) == 0:
                    continue
                tot, n = 0.0, 0
                for i in range(0, len(toks), micro):
                    t = torch.from_numpy(toks[i : i + micro]).to(d.device)
                    s = torch.from_numpy(segs[i : i + micro]).to(d.device)
                    valid = s[:, 1:] != 0
                    masked = cfg.doc_masking and needs_mask(segs[i : i + micro, :-1])
                    logits = model(t[:, :-1], s[:, :-1] if masked else None)
                    tot += float(causal_lm_loss(logits, t[:, 1:], valid))
                    n += int(valid.sum())
                res[f"eval/loss/{g}"] = tot / max(n, 1)
        model.train()
        return res

    def checkpoint() -> None:
        trainer_state = {"tokens": tokens, "sampler": sampler_state, "batch_tokens": cfg.batch_tokens,
                         "seq_len": seq_len, "plan": plan_fingerprint(plan), "loss": last_loss}
        save_checkpoint(out, step, model, optimizer, trainer_state, fsdp=fsdp, is_main=d.is_main,
                        keep=cfg.keep_checkpoints, max_shard_bytes=cfg.max_shard_bytes)
        distributed.barrier(d)

    # -- the loop -------------------------------------------------------------------------------------
    pool = ThreadPoolExecutor(max_workers=1)
    lo, hi = d.rank * rank_rows, (d.rank + 1) * rank_rows

    def fetch(picks, phase):
        """Runs in the reader thread: memory-mapped rows -> (pinned, on CUDA) tensors, and per
        micro-batch whether it needs the document mask (decided here so the GPU never syncs on it)."""
        b = sampler.read(picks, phase)
        t, s = torch.from_numpy(b.tokens), torch.from_numpy(b.segs)
        masked = [cfg.doc_masking and needs_mask(b.segs[i : i + micro, :-1]) for i in range(0, len(b.segs), micro)]
        if d.device.type == "cuda":
            t, s = t.pin_memory(), s.pin_memory()
        return b, t, s, masked

    def draw():
        picks, phase = sampler.next_indices(batch_rows)
        return pool.submit(fetch, picks[lo:hi], phase), sampler.state_dict()

    future, next_state = draw() if step < total_steps else (None, sampler.state_dict())
    sampler_state = sampler.state_dict() if future is None else None
    timer, progress = Timer(), Progress(total_steps, step, d.is_main and not quiet)
    loss_acc = torch.zeros((), device=d.device)
    last_phase, last_loss, eval_res = None, resumed_loss, {}
    model.train()
    while step < total_steps:
        lr = lr_at_tokens(schedule, tokens)
        set_lr(optimizer, lr)
        t_wait = time.perf_counter()
        batch, tok, seg, masked = future.result()
        sampler_state = next_state
        if step + 1 < total_steps:
            future, next_state = draw()
        tok, seg = tok.to(d.device, non_blocking=True), seg.to(d.device, non_blocking=True)
        timer.data += time.perf_counter() - t_wait
        valid = seg[:, 1:] != 0
        n_valid = distributed.all_reduce_sum(d, valid.sum().to(torch.float32)).clamp_min(1.0)
        n_micro = rank_rows // micro
        for m in range(n_micro):
            sl = slice(m * micro, (m + 1) * micro)
            last = m == n_micro - 1
            # Reduce gradients across ranks once per step, on the last micro-batch: FSDP2 keeps the
            # unsharded gradients until then, DDP skips its all-reduce inside no_sync().
            if fsdp:
                wrapped.set_requires_gradient_sync(last)
            sync = nullcontext() if (last or d.world == 1 or fsdp) else wrapped.no_sync()
            with sync, autocast():
                logits = forward(tok[sl, :-1], seg[sl, :-1] if masked[m] else None)
                loss = causal_lm_loss(logits, tok[sl, 1:], valid[sl]) / n_valid
            (loss * d.world).backward()
            loss_acc += loss.detach()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += cfg.batch_tokens
        timer.tokens += cfg.batch_tokens
        timer.steps += 1
        if batch.phase != last_phase:
            log_mixture(log, step, sampler.realised(sampler_state), say if last_phase is not None else None)
            last_phase = batch.phase
        if step % cfg.log_every == 0 or step == total_steps:
            last_loss = float(distributed.all_reduce_sum(d, loss_acc).item()) / timer.steps
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            dt = timer.lap()
            tps = timer.tokens / dt
            log.log(step, {"train/loss": last_loss, "train/lr": lr, "train/tokens": tokens,
                           "train/throughput(tok/s)": tps, "train/mfu(%)": 100 * flops_tok * tps / (peak * d.world) if peak else None,
                           "train/grad_norm": float(grad_norm), "time/data_loading(%)": 100 * timer.data / dt,
                           "time/step(s)": dt / timer.steps, "train/phase": batch.phase})
            progress.update({"loss": f"{last_loss:.3f}", "lr": f"{lr:.2e}", "tok/s": f"{tps:,.0f}"})
            timer.reset()
            loss_acc.zero_()
        else:
            progress.update({})
        do_eval = cfg.eval_every and (step % cfg.eval_every == 0 or step == total_steps)
        do_ckpt = (cfg.checkpoint_every and step % cfg.checkpoint_every == 0) or step == total_steps
        if do_eval or do_ckpt:
            # Eval and checkpoint time stays out of the throughput/MFU window; the step's queued
            # kernels finish first so they still count as training time.
            if d.device.type == "cuda":
                torch.cuda.synchronize()
            t_side = time.perf_counter()
            if do_eval:
                eval_res = evaluate()
                log.log(step, {**eval_res, "train/tokens": tokens, "time/eval(s)": time.perf_counter() - t_side})
            if do_ckpt:
                t_ckpt = time.perf_counter()
                checkpoint()
                log.log(step, {"time/checkpoint(s)": time.perf_counter() - t_ckpt})
            timer.exclude(time.perf_counter() - t_side)
    progress.close()
    pool.shutdown()
    log_mixture(log, step, sampler.realised(sampler_state), say)
    if d.is_main:
        (out / "mixture.json").write_text(json.dumps(sampler.realised(sampler_state), indent=2))
        if step > 0:
            export_final(out, step)
        if cfg.plots:
            from training.plots import plot_run

            plot_run(out, plan, schedule)
    distributed.teardown(d)
    return {"steps": step, "tokens": tokens, "loss": last_loss, "out_dir": str(out), **eval_res}


def log_mixture(log: MetricsLog, step: int, realised: list[dict[str, Any]], say) -> None:
    """Log (and print) the realised vs planned mixture of every phase started so far."""
    for ph in realised:
        if not ph["rows"]:
            continue
        log.log(step, {**{f"data/realised/{ph['phase']}/{g}": v for g, v in ph["realised"].items()},
                       **{f"data/planned/{ph['phase']}/{g}": v for g, v in ph["planned"].items()}})
        if say:
            pairs = ", ".join(f"{g} {ph['realised'][g]:.3f}/{w:.3f}" for g, w in ph["planned"].items() if w > 0)
            say(f"mixture {ph['phase']} ({ph['rows']} rows) realised/planned: {pairs}")


def export_final(out: Path, step: int) -> None:
    """`OUT/model/`: the final checkpoint's Hugging Face files without the optimizer state."""
    import shutil
    import tempfile

    from training.hf_io import replace_dir

    ckpt = out / "checkpoints" / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-model."))
    for f in ckpt.iterdir():
        if f.name != "trainer.pt":
            shutil.copy2(f, tmp / f.name)
    (tmp / "source_checkpoint.txt").write_text(ckpt.name + "\n")
    replace_dir(tmp, out / "model")
