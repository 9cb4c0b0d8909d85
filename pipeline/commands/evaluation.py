"""`curate eval MODEL [--run RUN] [--qa FILE ...] [--tasks TASK ...]`: evaluate a checkpoint.

MODEL is a curate checkpoint (`RUN/train/model`, `.../checkpoints/step-N`) or a Hugging Face
Llama, Mistral or Qwen2 folder (its tokenizer.json or tokenizer.model, else the run's). The run's held-out sets (`RUN/eval/`, written by `curate pack`) and
`--set NAME=FILE.jsonl` sets are read here and handed to `training/evaluate.py` as plain rows;
training/ sits above pipeline/, so it is reached with one lazy import, as `curate train` is.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from curate.pipeline.errors import CurateError
from curate.pipeline.catalog.eval_sets import parse_extra, read_index, read_jsonl_set


def run_sets(run: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    return {name: pq.read_table(run / e["path"], columns=["text", "domain", "source"]).to_pylist()
            for name, e in read_index(run).items() if (run / e["path"]).is_file()}


def _own_tokenizer(model: Path) -> bool:
    return (model / "tokenizer.json").is_file() or (model / "tokenizer.model").is_file()


def scoring_tokenizer(model: Path, run: Path | None, given: str | None) -> Path | None:
    """`--tokenizer`, else the model folder's own, else the run's (None: the model's, which must exist)."""
    from curate.stages.tokens.stage import run_tokenizer_path

    if given:
        return Path(given)
    if _own_tokenizer(model):
        return None
    found = run_tokenizer_path(run) if run is not None else None
    if found is not None:
        return found
    raise CurateError(f"{model} has neither tokenizer.json nor tokenizer.model: pass --tokenizer (a Hugging Face "
                      f"folder, tokenizer.json or sentencepiece .model) or --run")


def default_start(model: Path, tokenizer: Path | None, run: Path | None) -> str:
    """eos when the model reads the run's tokenizer and the run was packed without BOS (the
    context the trainer showed every document), else bos (a tokenizer without BOS falls back to eos)."""
    from curate.stages.tokens.tokenizers import resolve_model_path, tokenizer_digest
    from curate.stages.tokens.stage import run_tokenizer_path

    run_tok = run_tokenizer_path(run) if run is not None else None
    if run_tok is None or not (run / "tokens" / "index.json").is_file():
        return "bos"
    index = json.loads((run / "tokens" / "index.json").read_text())
    try:
        mine = resolve_model_path(tokenizer or model)
    except FileNotFoundError:
        return "bos"
    if mine.is_dir() and not run_tok.is_dir() and (mine / run_tok.name).is_file():
        mine = mine / run_tok.name  # curate's export: the run's sentencepiece model beside its tokenizer.json
    same = mine.is_dir() == run_tok.is_dir() and tokenizer_digest(mine) == tokenizer_digest(run_tok)
    return "eos" if same and not index.get("add_bos", False) else "bos"


def eval_model(model: str | Path, run: str | Path | None = None, qa: Sequence[str] = (), tasks: Sequence[str] = (),
               sets: Sequence[str] = (), out: str | Path | None = None, device: str = "cpu",
               tokenizer: str | None = None, start: str | None = None, block: int = 1024, stride: int = 512,
               batch_tokens: int = 16384, max_docs: int | None = None,
               echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate MODEL on the run's held-out sets, extra JSONL sets, QA sets and lm-eval tasks;
    writes eval.json and eval.png into `out` (default: the model folder)."""
    from curate.training.evaluate import EvalConfig, evaluate, read_qa

    model = Path(model)
    if not (model / "config.json").is_file():
        raise CurateError(f"{model} is not a model folder (config.json is missing)")
    run_dir = Path(run) if run else None
    if run_dir is not None and not run_dir.is_dir():
        raise CurateError(f"--run: {run_dir} does not exist")
    texts = run_sets(run_dir) if run_dir is not None else {}
    for s in parse_extra(sets, "jsonl", "--set"):
        if s.name in texts:
            raise CurateError(f"--set {s.name}: the run already has an evaluation set of that name")
        texts[s.name] = read_jsonl_set(Path(s.value)).to_pylist()
    if not texts and not qa and not tasks:
        raise CurateError("nothing to evaluate: give --run (with held-out sets from `curate pack`), --set, --qa or --tasks")
    tok = scoring_tokenizer(model, run_dir, tokenizer)
    try:
        qa_sets = {Path(p).stem: read_qa(p) for p in qa}
        cfg = EvalConfig(block=block, stride=stride, batch_tokens=batch_tokens, max_docs=max_docs)
        result = evaluate(model, texts, qa_sets, cfg, device=device, tokenizer=tok,
                          start=start or default_start(model, tok, run_dir), tasks=list(tasks),
                          out_dir=Path(out) if out else model)
    except (ValueError, FileNotFoundError) as e:
        raise CurateError(str(e)) from None
    echo(summary(result))
    return result


def summary(result: dict[str, Any]) -> str:
    lines = [f"{'set':<24} {'docs':>7} {'bits/byte':>10} {'loss':>8}"]
    for name, s in result["sets"].items():
        bpb, loss = s["bpb"], s["loss"]
        if bpb is None or loss is None:  # a held-out set with no documents: nothing was measured
            lines.append(f"{name:<24} {s['docs']:>7,} {'-':>10} {'-':>8}  (no documents held out)")
            continue
        lines.append(f"{name:<24} {s['docs']:>7,} {bpb:>10.4f} {loss:>8.4f}")
    for name, q in result["qa"].items():
        acc = f"  acc {q['acc']:.3f} (norm {q['acc_norm']:.3f}, {q['mc_items']} items)" if "acc" in q else ""
        lines.append(f"qa:{name:<21} {q['items']:>7,} {q['answer_bpb']:>10.4f} {q['answer_loss']:>8.4f}{acc}")
    for task, metrics in result.get("lm_eval", {}).items():
        lines.append(f"lm-eval {task}: " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())))
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="bits per byte per held-out set, QA accuracy and lm-eval tasks of a checkpoint")
    p.add_argument("model", help="curate checkpoint or Hugging Face Llama/Mistral/Qwen2 folder")
    p.add_argument("--run", help="run directory whose held-out sets (RUN/eval/, from `curate pack`) to score")
    p.add_argument("--set", action="append", default=[], metavar="NAME=FILE",
                   help="an extra evaluation set: JSONL of {\"text\", \"domain\"?, \"source\"?} lines")
    p.add_argument("--qa", action="append", default=[], metavar="FILE",
                   help="QA set: JSONL of {\"question\", \"answer\", \"choices\"?} lines")
    p.add_argument("--tasks", nargs="+", default=[], metavar="TASK",
                   help="lm-eval tasks: names, local task YAML files, or QA .jsonl sets (run offline)")
    p.add_argument("--out", help="folder for eval.json and eval.png (default: the model folder)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (bf16 autocast on CUDA)")
    p.add_argument("--tokenizer", help="a Hugging Face folder, tokenizer.json or sentencepiece .model "
                                       "(default: the model's, else the run's)")
    p.add_argument("--start", choices=["bos", "eos"],
                   help="token each text is scored after (default: eos for a model on the run's tokenizer "
                        "packed without BOS, else bos)")
    p.add_argument("--block", type=int, default=1024, help="tokens per scoring window (default 1024)")
    p.add_argument("--stride", type=int, default=512, help="sliding-window step for long documents (default 512)")
    p.add_argument("--batch-tokens", type=int, default=16384, help="padded tokens per forward (default 16384)")
    p.add_argument("--max-docs", type=int, help="score at most this many documents per set")
    p.set_defaults(func=_cli)


def _cli(a: argparse.Namespace) -> int:
    eval_model(a.model, a.run, a.qa, a.tasks, a.set, a.out, a.device, a.tokenizer, a.start, a.block, a.stride,
               a.batch_tokens, a.max_docs)
    return 0
