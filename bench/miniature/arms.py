"""The miniature's models: the base pretrained on the general pool, one recipe (and plan) per arm,
the arms through `search.arms.run_arms`, and every model scored by curate's evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.miniature.config import MiniatureConfig
from bench.miniature.timing import Heartbeat


def train_overrides(cfg: MiniatureConfig) -> dict:
    t = cfg.train
    return {"batch_tokens": cfg.model.seq_len * t.batch_rows, "micro_batch_rows": t.batch_rows,
            "holdout_rows": 0, "eval_every": 0, "checkpoint_every": t.checkpoint_every, "keep_checkpoints": 1,
            "log_every": t.log_every, "device": t.device, "tensorboard": False}


def eta0(cfg: MiniatureConfig) -> float:
    """The recipe's start LR: the base model's final (minimum) pretraining LR."""
    return cfg.train.base_lr * cfg.train.base_lr_end_ratio


def switch_fraction(cfg: MiniatureConfig, schedule: dict) -> float:
    """Where arm (b) switches to its QA blend, as a fraction of the tokens: the first whole step at
    LR <= eta0 x switch_lr_ratio of its schedule (`mixtures.schedule.boundary_token`)."""
    from curate.mixtures.recipes import ScheduleSpec
    from curate.mixtures.schedule import boundary_token

    step = cfg.model.seq_len * cfg.train.batch_rows
    total = int(cfg.train.cpt_tokens) // step * step
    s = ScheduleSpec(**schedule).resolve(total, step)
    return boundary_token(s, lr_ratio=cfg.train.switch_lr_ratio, align=step) / total


def recipes(cfg: MiniatureConfig, groups: list[dict]) -> dict[str, dict]:
    """A recipe per arm over the same disjoint groups; the arms differ only in roles and schedule."""
    t, lr0 = cfg.train, eta0(cfg)
    names = [g["name"] for g in groups]
    gen = [n for n in names if n.startswith("gen")]
    pool = [n for n in names if n != "qa"]
    tgt = [n for n in pool if n.startswith("tgt")]
    cosine = {"kind": "cosine", "lr_start": lr0, "lr_end": lr0 * t.lr_end_ratio, "warmup_fraction": 0.0}
    common = {"groups": groups, "max_epochs": t.max_epochs}

    def reuse(name: str, target: list[str], schedule: dict, switch: dict | None = None) -> dict:
        return {**common, "name": name, "kind": "reuse", "schedule": schedule,
                "switch": switch or {"lr_ratio": t.switch_lr_ratio}, "qa_share": t.qa_share,
                "qa_max_epochs": t.qa_max_epochs, "role_weights": {"target": t.target_weight},
                "roles": {"qa": ["qa"], "target": target, "general": [n for n in pool if n not in target]}}

    # Re-warming as Ibrahim et al. 2024 (arXiv:2403.08763) and Gupta et al. 2023
    # (arXiv:2308.04014): linear warmup from eta0 over 1% of the tokens to the peak, cosine decay
    # to a tenth of it. The QA blend starts at the same token fraction as (b)'s, so (e) and (b)
    # differ in the LR path alone, not in how much QA-blend training they get.
    peak = t.rewarm_lr or t.base_lr
    rewarm = {"kind": "cosine", "lr_start": peak, "lr_end": peak * t.rewarm_lr_end_ratio,
              "warmup_fraction": t.rewarm_warmup_fraction, "warmup_init_lr": lr0}
    out = {"base": {**common, "groups": [g for g in groups if g["name"] in gen], "name": "base", "kind": "natural",
                    "schedule": {"kind": "cosine", "lr_start": t.base_lr, "lr_end": lr0,
                                 "warmup_fraction": t.base_warmup_fraction}},
           "a": {**common, "groups": [g for g in groups if g["name"] in gen], "name": "a-continue", "kind": "natural",
                 "schedule": cosine},
           "b": reuse("b-reuse", tgt, cosine),
           # the reuse recipe before the QA share was its own: the target upweighted throughout,
           # the QA pairs left out (they had ~0.1% of its QA blend), so (b) vs (h) is the QA phase
           "h": {**reuse("h-target-only", tgt, cosine), "qa_share": None, "qa_max_epochs": None,
                 "roles": {"held_out": ["qa"], "target": tgt, "general": [n for n in pool if n not in tgt]},
                 "role_weights": {"target": t.target_weight, "held_out": 0.0}},
           "c": reuse("c-classifier", [n for n in pool if "-sel" in n], cosine),
           "d": reuse("d-random", [n for n in pool if "-rnd" in n], cosine),
           "g": reuse("g-preselect", [n for n in pool if "-pre" in n], cosine),
           "e": reuse("e-rewarm", tgt, rewarm, {"fraction": switch_fraction(cfg, cosine)})}
    return {k: v for k, v in out.items() if k == "base" or k in cfg.arms}


def role_tokens(plan: dict, realised: list[dict] | None = None) -> dict:
    """Tokens per role over the whole plan, and the QA blend's share of the plan's tokens.

    `realised`: the trainer's OUT/mixture.json (rows drawn per phase and group), whose counts are
    used instead of the plan's; the trainer follows the plan to within one row per group and phase."""
    role = {g["name"]: g["role"] or "-" for g in plan["groups"]}
    tokens = [dict(p["tokens"]) for p in plan["phases"]]
    if realised is not None:
        row = plan["seq_len"]
        tokens = [{g: round(f * ph["rows"]) * row for g, f in ph["realised"].items()} for ph in realised]
    roles: dict[str, int] = {}
    for phase in tokens:
        for g, n in phase.items():
            roles[role[g]] = roles.get(role[g], 0) + n
    qb = [i for i, p in enumerate(plan["phases"]) if p["name"] == "qa-blend"]
    total = sum(sum(phase.values()) for phase in tokens)
    share = sum(sum(tokens[i].values()) for i in qb) / total if total else 0.0
    return {"roles": roles, "qa_blend_share": share, "total": total,
            "source": "trainer (mixture.json)" if realised is not None else "plan"}


def realised_mixture(out: Path, arm: str) -> list[dict] | None:
    """Base 0's seed 0's OUT/arms/<arm>-b0-s0/mixture.json, the trainer's rows per phase and group; None if absent."""
    path = out / "arms" / f"{arm}-b0-s0" / "mixture.json"
    return json.loads(path.read_text()) if path.is_file() else None


def make_plan(cfg: MiniatureConfig, out: Path, name: str, recipe: dict, tokens: float) -> dict:
    from curate.mixtures.recipes import recipe_from_dict
    from curate.pipeline.commands.plan import plan

    path = out / "plans" / f"{name}.json"
    return plan(out / "run", recipe_from_dict(recipe, f"arm {name}"), tokens=tokens, seq_len=cfg.model.seq_len,
                batch_size=cfg.train.batch_rows, out=path, plot=True, echo=None)


def init_shaped(folder: Path, shape: dict, vocab_size: int, seq_len: int, seed: int) -> None:
    """A random Llama of any shape (`ModelConfig.shape()`), written as `curate init-model` writes one."""
    from curate.training.hf_io import save_model
    from curate.training.model import LlamaModel
    from curate.training.model import ModelConfig as Shape

    model = LlamaModel(Shape(vocab_size=vocab_size, max_position_embeddings=seq_len, **shape))
    model.reset_parameters(seed)
    save_model(model, folder)


def pretrain_base(cfg: MiniatureConfig, out: Path, recipe: dict, echo, folder: Path | None = None, seed: int = 0,
                  shape: dict | None = None, tokens: float | None = None) -> dict:
    """Pretrain a model on the general pool into `folder` (default OUT/base), init and data order
    from `seed` (resumes from its checkpoints when killed). Bases and PreSelect rungs alike."""
    from curate.training.cli import run_vocab_size
    from curate.training.config import load_train_config
    from curate.training.loop import train

    run, folder = out / "run", folder or out / "base"
    init = folder / "init"
    if not (init / "config.json").is_file():
        init_shaped(init, shape or cfg.model.shape(), run_vocab_size(run), cfg.model.seq_len, seed)
    name = folder.relative_to(out).as_posix().replace("/", "-")
    plan = make_plan(cfg, out, name, recipe, tokens or cfg.train.base_tokens)
    echo(f"[{name}] pretraining on the general pool: {plan['total_tokens']:,} tokens, seed {seed}")
    tc = load_train_config(None, {**train_overrides(cfg), "seed": seed, "plots": True})
    total = plan["total_tokens"] // (cfg.model.seq_len * cfg.train.batch_rows)

    def progress() -> str:
        curve = loss_curve(folder)
        return f"[{name}] step {curve[-1][0]}/{total}, loss {curve[-1][1]:.3f}" if curve else ""

    with Heartbeat(progress, echo):
        res = train(run, init, plan_path=out / "plans" / f"{name}.json", config=tc, out_dir=folder, quiet=True)
    return {"model": str(folder / "model"), "steps": res["steps"], "tokens": res["tokens"], "loss": res["loss"],
            "seed": seed}


def base_job(job: dict) -> dict:
    """One base pretrained in an executor's worker (bases side by side, one core each)."""
    import torch

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    return pretrain_base(job["cfg"], Path(job["out"]), job["recipe"], lambda s: None, folder=Path(job["folder"]),
                         seed=job["seed"])


SCORED_SETS = ("target", "general")
"""The held-out sets every model is scored on; the dev slices are the search's alone (about half
the held-out documents, so half the scoring time at either scale)."""


def eval_job(job: dict) -> dict:
    """One model scored by `curate eval`'s functions: BPB on SCORED_SETS (windows of the training
    context) and the held-out QA answers; cached beside the model."""
    from curate.pipeline.commands.evaluation import default_start, run_sets, scoring_tokenizer
    from curate.search.arms import digest_model
    from curate.training.evaluate import EvalConfig, evaluate, read_qa

    model, dest, run = Path(job["model"]), Path(job["dest"]), Path(job["run"])
    key = {"model": digest_model(model), "qa": job["qa"], "block": job["block"]}
    cache = dest / "miniature_eval.json"
    if cache.is_file() and json.loads(cache.read_text()).get("key") == key:
        return json.loads(cache.read_text())["metrics"]
    texts = {k: v for k, v in run_sets(run).items() if k in SCORED_SETS}
    tok = scoring_tokenizer(model, run, None)
    cfg = EvalConfig(block=job["block"], stride=job["block"] // 2, batch_tokens=16384)
    ev = evaluate(model, texts, {"qa": read_qa(job["qa"])}, cfg, device=job["device"], tokenizer=tok,
                  start=default_start(model, tok, run), tasks=[], out_dir=dest)
    m = {f"{k}/bpb": v["bpb"] for k, v in ev["sets"].items()}
    for name, q in ev["qa"].items():
        m["qa/answer_bpb"] = q["answer_bpb"]
        if q.get("acc") is not None:
            m["qa/acc"], m["qa/acc_norm"] = q["acc"], q["acc_norm"]
    dest.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"key": key, "metrics": m}, indent=2))
    return m


def run_arms(cfg: MiniatureConfig, out: Path, plans: dict[str, dict], bases: list[Path], executor: Any,
             echo) -> dict:
    """Every arm x seed from every base (resumable: markers in OUT/arms/_done): `<arm>-b<base>-s<seed>`."""
    from curate.pipeline.commands.compare import train_config_dict
    from curate.search.arms import Arm
    from curate.search.arms import run_arms as run_arm_units

    tc = train_config_dict(None, None, train_overrides(cfg))
    echo(f"[arms] {len(plans) * cfg.seeds * len(bases)} arm runs ({', '.join(plans)} x {cfg.seeds} seeds x "
         f"{len(bases)} bases) of {next(iter(plans.values()))['total_tokens']:,} tokens each")
    models = {}
    for b, base in enumerate(bases):
        arms = [Arm(f"{k}-b{b}-s{s}", p, s) for k, p in plans.items() for s in range(cfg.seeds)]
        # The runner's own scoring is reduced to one document per set: every model, the bases too,
        # is scored in `score` below, which adds the held-out QA answers the runner does not score.
        run_arm_units(out / "run", out / "arms", arms, base, tc, executor=executor, eval_max_docs=1, echo=echo)
        models.update({a.name: out / "arms" / a.name / "model" for a in arms})
    return models


def score(cfg: MiniatureConfig, out: Path, models: dict[str, Path], qa_path: str, executor: Any, echo) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() and cfg.train.device != "cpu" else "cpu"
    jobs = [{"model": str(m), "dest": str(m.parent), "run": str(out / "run"), "qa": str(Path(qa_path).resolve()),
             "block": cfg.model.seq_len, "device": device} for m in models.values()]
    echo(f"[eval] scoring {len(jobs)} models: held-out target, general and QA answers")
    results = executor.map(eval_job, jobs, desc="eval")
    return dict(zip(models, results))


def loss_curve(folder: Path) -> list[tuple[int, float]]:
    path = folder / "metrics.jsonl"
    if not path.is_file():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
