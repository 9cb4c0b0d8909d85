"""`curate train` and `curate init-model`: thin wrappers over `training.loop.train` and `hf_io.init_model`.

`pipeline/cli.py` imports this module lazily (training sits above pipeline in the import order only
for this entry point), so `curate --help` never imports torch.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="continue pretraining a base model on RUN_DIR/tokens, following plan.json",
                       description="Continue pretraining a Hugging Face Llama folder (or curate checkpoint) on the "
                                   "packed token groups of RUN_DIR, phase by phase as plan.json says. Resumes from the "
                                   "latest checkpoint in --out when there is one.")
    p.add_argument("run_dir", type=Path, help="run directory holding tokens/ and plan.json")
    p.add_argument("--base", type=Path, required=True, help="base model folder (config.json + safetensors)")
    p.add_argument("--plan", type=Path, default=None, help="plan.json to follow (default RUN_DIR/plan.json)")
    p.add_argument("--config", type=Path, default=None, help="train YAML (see configs/train.yaml)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps")
    p.add_argument("--out", type=Path, default=None, help="output folder (default RUN_DIR/train)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one train config field (YAML value), e.g. --set micro_batch_rows=4")
    p.add_argument("--ray", type=int, default=0, metavar="N", help="run on N Ray Train workers instead of this process")
    p.add_argument("--gpu", action="store_true", help="with --ray: one GPU per worker")
    p.add_argument("--address", default=None, help="with --ray: Ray cluster address (default RAY_ADDRESS or local)")
    p.set_defaults(func=_guard(_train_cmd, "train"))

    q = sub.add_parser("init-model", help="write a randomly initialised Llama (or a model like a base) as a "
                                          "Hugging Face folder",
                       description="Write a random Llama-architecture base model (config.json + model.safetensors) "
                                   "for demos and tests.")
    q.add_argument("out_dir", type=Path, help="folder to write")
    q.add_argument("--size", default="tiny", choices=["tiny", "125m", "350m"], help="model size")
    q.add_argument("--vocab-size", type=int, default=None, help="embedding rows (default 32000, or the run's)")
    q.add_argument("--run", type=Path, default=None, help="take the vocabulary size from RUN/tokens")
    q.add_argument("--like", type=Path, default=None, metavar="BASE_DIR",
                   help="a small random model of BASE_DIR's architecture (Llama, Mistral, Qwen2) with its "
                        "tokenizer files, at --size: a proxy for ladders and mixture search")
    q.add_argument("--seq-len", type=int, default=None,
                   help="max_position_embeddings to record (default 2048, or the --like base's)")
    q.add_argument("--tie-embeddings", action="store_true", help="share input and output embeddings")
    q.add_argument("--seed", type=int, default=0, help="initialisation seed")
    q.set_defaults(func=_guard(_init_cmd, "init-model"))


def _guard(fn, name: str):
    """Bad input (a missing file, an invalid field, a vocabulary mismatch) prints one line, exit 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"curate {name}: error: {e}", file=sys.stderr)
            return 2

    return run


def _parse_sets(items: list[str]) -> dict:
    import yaml

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def run_vocab_size(run_dir: Path) -> int:
    """Largest vocabulary among the run's packed groups (tokens/<group>/meta.json)."""
    metas = sorted(Path(run_dir, "tokens").glob("*/meta.json"))
    if not metas:
        raise FileNotFoundError(f"{run_dir}/tokens has no packed groups: run `curate pack` first")
    return max(int(json.loads(m.read_text())["vocab_size"]) for m in metas)


def _train_cmd(args: argparse.Namespace) -> int:
    from curate.training.config import load_train_config

    overrides = _parse_sets(args.set)
    if args.max_steps is not None:
        overrides["max_steps"] = args.max_steps
    cfg = load_train_config(args.config, overrides)
    kwargs = dict(run_dir=args.run_dir.resolve(), base=args.base.resolve(),
                  plan_path=args.plan.resolve() if args.plan else None, config=cfg,
                  out_dir=args.out.resolve() if args.out else None)
    if args.ray:
        from curate.training.ray_train import launch_ray

        launch_ray(kwargs, num_workers=args.ray, use_gpu=args.gpu, address=args.address)
        print(f"ray train finished: outputs in {kwargs['out_dir'] or kwargs['run_dir'] / 'train'}")
        return 0
    from curate.training.loop import train

    result = train(**kwargs)
    print(json.dumps(result, indent=2))
    return 0


def _init_cmd(args: argparse.Namespace) -> int:
    from curate.training.hf_io import init_like, init_model

    if args.like is not None:
        if args.vocab_size or args.run or args.tie_embeddings:
            raise ValueError("--like takes the vocabulary and embeddings from the base; leave out --vocab-size, "
                             "--run and --tie-embeddings")
        path = init_like(args.like, args.out_dir, args.size, seed=args.seed, max_position_embeddings=args.seq_len)
        print(f"wrote a random {args.size} model of {args.like}'s architecture and tokenizer to {path}")
        return 0
    vocab = args.vocab_size or (run_vocab_size(args.run) if args.run else 32000)
    path = init_model(args.out_dir, args.size, vocab_size=vocab, seed=args.seed,
                      max_position_embeddings=args.seq_len or 2048, tie_word_embeddings=args.tie_embeddings)
    print(f"wrote a random {args.size} Llama (vocab {vocab}) to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m curate.training.cli ...`) for use before `curate` wires the commands in."""
    parser = argparse.ArgumentParser(prog="curate", allow_abbrev=False)  # as pipeline/commands/parser.py
    register(parser.add_subparsers(dest="command", required=True,
                                   parser_class=functools.partial(argparse.ArgumentParser, allow_abbrev=False)))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
