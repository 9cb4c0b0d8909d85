"""Evaluation of a checkpoint: bits per byte per held-out set, QA answer loss and multiple choice.

`evaluate()` is the function behind `curate eval`; `RunEval` is the same evaluation on a live
model, which the trainer calls every `eval_every` steps. Both score through `training/bpb.py`.
Inputs are plain data: evaluation sets as lists of `{"text", "domain"?, "source"?}` rows (the
pipeline reads them from `RUN/eval/`), QA sets as lists of `{"question", "answer", "choices"?}`.

QA items are scored as lm-evaluation-harness scores a task: context `Question: {question}\nAnswer:`,
continuation `" " + answer` (its default target delimiter), multiple choice by the summed
log-likelihood of each choice (`acc`) and by that divided by the choice's length in characters
(`acc_norm`). `training/lm_eval_tasks.py` writes the same set as an lm-eval task.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from curate.training.bpb import ScoringModel, load_scoring_model
from curate.training.qa import QA_PROMPT, TARGET_DELIMITER, read_qa  # noqa: F401 (read_qa: part of this module's API)

BREAKDOWNS = ("domain", "source")


@dataclass
class EvalConfig:
    """How text is scored (see training/bpb.py for the sliding window)."""

    block: int = 1024
    """Tokens per window; at most the model's context."""
    stride: int = 512
    """Window step for documents longer than a block: each token keeps block - stride tokens of context."""
    batch_tokens: int = 16384
    """Padded tokens per forward."""
    max_docs: int | None = None
    """Score at most this many documents per set (the first ones; sets are in a fixed order)."""

    def __post_init__(self) -> None:
        if self.block < 2:
            raise ValueError(f"block: must be >= 2, got {self.block}")
        if not 0 < self.stride < self.block:
            raise ValueError(f"stride: must be in [1, block - 1], got {self.stride}")
        if self.batch_tokens < self.block:
            raise ValueError(f"batch_tokens: must be >= block ({self.block}), got {self.batch_tokens}")
        if self.max_docs is not None and self.max_docs < 1:
            raise ValueError(f"max_docs: must be >= 1 or None, got {self.max_docs}")


def totals(rows: list[tuple[float, int, int]]) -> dict[str, Any]:
    """Bits per byte and loss (nats per token) of scored texts, summed before dividing."""
    bits = sum(r[0] for r in rows)
    n_bytes = sum(r[1] for r in rows)
    n_tok = sum(r[2] for r in rows)
    return {"bpb": bits / n_bytes if n_bytes else None, "loss": bits * math.log(2) / n_tok if n_tok else None,
            "bits": bits, "bytes": n_bytes, "tokens": n_tok, "docs": len(rows)}


def eval_set(sm: ScoringModel, docs: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    """Totals of one evaluation set, and per domain / per source where the rows carry them."""
    docs = docs[:cfg.max_docs] if cfg.max_docs else docs
    rows = sm.doc_bits([d["text"] for d in docs], cfg.block, cfg.stride, cfg.batch_tokens)
    out = totals(rows)
    for key in BREAKDOWNS:
        values = [d.get(key) for d in docs]
        if any(v is not None for v in values):
            by: dict[str, list] = {}
            for v, r in zip(values, rows):
                by.setdefault(str(v), []).append(r)
            out[f"by_{key}"] = {v: totals(rs) for v, rs in sorted(by.items())}
    return out


def eval_qa(sm: ScoringModel, items: list[dict], cfg: EvalConfig) -> dict[str, Any]:
    """Answer bits per byte and loss given the question; multiple-choice accuracy where choices exist."""
    prompts = [QA_PROMPT.format(question=it["question"]) for it in items]
    rows = sm.answer_bits(prompts, [TARGET_DELIMITER + it["answer"] for it in items], cfg.block, cfg.stride,
                          cfg.batch_tokens)
    t = totals(rows)
    out = {"items": len(items), "answer_bpb": t["bpb"], "answer_loss": t["loss"], "answer_bits": t["bits"]}
    mc = [(p, it) for p, it in zip(prompts, items) if it["choices"]]
    if mc:
        flat = [(p, TARGET_DELIMITER + c) for p, it in mc for c in it["choices"]]
        scored = sm.answer_bits([p for p, _ in flat], [c for _, c in flat], cfg.block, cfg.stride, cfg.batch_tokens)
        acc = acc_norm = 0
        at = 0
        for _, it in mc:
            k = len(it["choices"])
            ll = [-b * math.log(2) for b, _, _ in scored[at:at + k]]
            at += k
            gold = it["choices"].index(it["answer"])
            acc += max(range(k), key=lambda i: ll[i]) == gold
            acc_norm += max(range(k), key=lambda i: ll[i] / len(it["choices"][i])) == gold
        out.update(mc_items=len(mc), acc=acc / len(mc), acc_norm=acc_norm / len(mc))
    return out


def evaluate(model: str | Path, sets: dict[str, list[dict]] | None = None, qa: dict[str, list[dict]] | None = None,
             config: EvalConfig | None = None, device: str = "cpu", tokenizer: str | Path | None = None,
             start: str = "bos", tasks: list[str] | None = None, out_dir: str | Path | None = None) -> dict[str, Any]:
    """Evaluate a checkpoint (curate's or any Hugging Face Llama folder) on evaluation and QA sets,
    and on lm-eval `tasks` (names, or YAML files); writes eval.json and eval.png into `out_dir`."""
    cfg = config or EvalConfig()
    sm = load_scoring_model(model, device=device, tokenizer=tokenizer, start=start)
    result: dict[str, Any] = {"model": str(model), "settings": {**asdict(cfg), "device": device, "start": start},
                              "sets": {}, "qa": {}}
    for name, docs in (sets or {}).items():
        result["sets"][name] = eval_set(sm, docs, cfg)
    for name, items in (qa or {}).items():
        result["qa"][name] = eval_qa(sm, items, cfg)
    del sm
    if tasks:
        from curate.training.lm_eval_tasks import run_lm_eval

        result["lm_eval"] = run_lm_eval(model, tasks, device=device)
    if out_dir is not None:
        write_outputs(Path(out_dir), result)
    return result


def write_outputs(out_dir: Path, result: dict[str, Any]) -> list[Path]:
    """`eval.json` and `eval.png` (bits per byte per set, accuracy per QA set)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / ".eval.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(out_dir / "eval.json")
    return [out_dir / "eval.json", plot(result, out_dir / "eval.png")]


def plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(n, s["bpb"]) for n, s in result["sets"].items() if s["bpb"] is not None]
    bars += [(f"qa:{n}", q["answer_bpb"]) for n, q in result["qa"].items() if q["answer_bpb"] is not None]
    accs = [(n, q["acc"]) for n, q in result["qa"].items() if "acc" in q]
    fig, axes = plt.subplots(1, 2 if accs else 1, figsize=(10 if accs else 6, 4), squeeze=False)
    ax = axes[0][0]
    ax.bar([n for n, _ in bars], [v for _, v in bars], color="tab:blue")
    ax.set_ylabel("bits per byte")
    ax.set_title("held-out sets (QA: answer given question)")
    ax.tick_params(axis="x", rotation=30)
    if accs:
        ax = axes[0][1]
        ax.bar([n for n, _ in accs], [v for _, v in accs], color="tab:green")
        ax.set_ylim(0, 1)
        ax.set_ylabel("multiple-choice accuracy")
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(Path(result["model"]).name, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def read_run_sets(run_dir: str | Path, max_docs: int | None = None) -> dict[str, list[dict]]:
    """The evaluation sets `curate pack` wrote into `RUN/eval/` (index.json lists them)."""
    import pyarrow.parquet as pq

    run_dir = Path(run_dir)
    index = run_dir / "eval" / "index.json"
    if not index.is_file():
        return {}
    sets = {}
    for name, entry in json.loads(index.read_text())["sets"].items():
        rows = pq.read_table(run_dir / entry["path"], columns=["text", "domain", "source"]).to_pylist()
        if rows:
            sets[name] = rows[:max_docs] if max_docs else rows
    return sets


class RunEval:
    """The held-out evaluation of a run, on the model being trained (`eval/<set>/bpb` metrics).

    Loads the run's evaluation sets and tokenizer once; each call scores the live model (under
    no_grad, in eval mode, restoring train mode after), on the model's device.
    """

    def __init__(self, run_dir: str | Path, config: EvalConfig | None = None, start: str | None = None) -> None:
        from curate.stages.tokens.tokenizers import load_tokenizer
        from curate.stages.tokens.stage import run_tokenizer_path

        run_dir = Path(run_dir)
        self.cfg = config or EvalConfig(block=512, stride=256, batch_tokens=8192, max_docs=64)
        self.sets = read_run_sets(run_dir, self.cfg.max_docs)
        self.sp = None
        tok = run_tokenizer_path(run_dir)
        if self.sets and tok is not None:
            self.sp = load_tokenizer(tok)
        if start is None:
            # Rows packed without BOS put EOS before each document: score in the context trained on.
            index = run_dir / "tokens" / "index.json"
            add_bos = json.loads(index.read_text()).get("add_bos", False) if index.is_file() else True
            start = "bos" if add_bos else "eos"
        self.start = start

    def __bool__(self) -> bool:
        return bool(self.sets) and self.sp is not None

    def __call__(self, model) -> dict[str, float]:
        if not self:
            return {}
        model = getattr(model, "module", model)  # DDP wraps the model; scoring needs no gradient sync
        was_training = model.training
        device = next(model.parameters()).device
        try:
            sm = ScoringModel(model, self.sp, device=str(device), start=self.start)
            cfg = self.cfg
            if sm.context and sm.context < cfg.block:  # a model with fewer positions than the default window
                cfg = replace(cfg, block=sm.context, stride=sm.context // 2)
            out = {}
            for name, docs in self.sets.items():
                t = eval_set(sm, docs, cfg)
                if t["bpb"] is not None:
                    out[f"eval/{name}/bpb"] = t["bpb"]
                    out[f"eval/{name}/loss"] = t["loss"]
            return out
        finally:
            model.train(was_training)
