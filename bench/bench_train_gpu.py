"""MFU of `curate train` on one CUDA GPU: ~125M and ~350M Llama models, bf16, with and without compile.

Goal: >= 45% MFU on an H100 and data loading <= 2% of step time. Needs no network and no pipeline
run: it writes its own synthetic token files and plan (uniform random tokens, vocab 32,000,
seq_len 2048), builds random bases, and runs the real trainer (`training.loop.train`) in a fresh
subprocess per configuration, reading the trainer's own metrics.jsonl. Without CUDA it says so and
exits 0.

    python bench/bench_train_gpu.py [--steps 30] [--sizes 125m,350m] [--doc-masking]
    python bench/bench_train_gpu.py --base DIR [--micro 8]   # a Hugging Face base (Llama, Mistral, Qwen2) as it is
    python bench/bench_train_gpu.py --smoke     # exercise the script on CPU (figures meaningless)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

SEQ, VOCAB = 2048, 32000
MICRO = {"125m": 16, "350m": 8, "tiny": 2}


def prepare(tmp: Path, steps: int, batch_tokens: int, doc_masking: bool, sizes: list[str], base: str | None) -> None:
    from curate.training.hf_io import init_model, read_config
    from curate.training.synthetic import random_docs, write_plan, write_tokens

    vocab = read_config(Path(base)).vocab_size if base else VOCAB  # ids cover the base's whole embedding
    n_tok = batch_tokens * (steps + 2)
    docs = {"web": random_docs(n_tok // 2 + SEQ * 8, vocab, 1, mean_len=1500),
            "code": random_docs(n_tok // 2 + SEQ * 8, vocab, 2, mean_len=1500)}
    write_tokens(tmp / "run", docs, SEQ, vocab, with_segs=doc_masking)
    avail = {g: int(sum(len(x) + 1 for x in d)) for g, d in docs.items()}
    total = batch_tokens * steps
    write_plan(tmp / "run", [{"web": 0.5, "code": 0.5}], [total], SEQ,
               {"kind": "cosine", "lr_start": 3e-4, "lr_end": 3e-5, "warmup_tokens": 0}, avail, max_epochs=4)
    if base:
        (tmp / "base-base").symlink_to(Path(base).resolve())
        return
    for size in sizes:
        init_model(tmp / f"base-{size}", size, vocab_size=VOCAB, max_position_embeddings=SEQ)


def one(tmp: Path, size: str, compile_: bool, steps: int, batch_tokens: int, doc_masking: bool, smoke: bool,
        micro: int) -> dict:
    from curate.training.config import TrainConfig
    from curate.training.loop import train
    from curate.training.metrics import read_metrics

    out = tmp / f"out-{size}-{'compile' if compile_ else 'eager'}"
    cfg = TrainConfig(batch_tokens=batch_tokens, micro_batch_rows=MICRO.get(size, micro), dtype="fp32" if smoke else "bf16",
                      device="cpu" if smoke else "cuda", peak_tflops=1.0 if smoke else None,
                      compile=compile_, log_every=5, eval_every=0, checkpoint_every=0, plots=False,
                      doc_masking=doc_masking, max_steps=steps, holdout_rows=2)
    train(tmp / "run", tmp / f"base-{size}", config=cfg, out_dir=out, quiet=True)
    lines = [r for r in read_metrics(out / "metrics.jsonl") if "train/mfu(%)" in r]
    lines = lines[2:] if len(lines) > 2 else lines[-1:]  # skip warm-up / compilation windows
    import torch

    return {"size": size, "compile": compile_, "windows": len(lines),
            "mfu(%)": statistics.median(r["train/mfu(%)"] or 0.0 for r in lines),
            "tok/s": statistics.median(r["train/throughput(tok/s)"] for r in lines),
            "data_loading(%)": statistics.median(r["time/data_loading(%)"] for r in lines),
            "peak_mem(GiB)": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-tokens", type=int, default=256 * SEQ)
    ap.add_argument("--sizes", default="125m,350m")
    ap.add_argument("--doc-masking", action="store_true", help="pack with segs.bin and mask across documents")
    ap.add_argument("--smoke", action="store_true",
                    help="check the script on CPU: tiny model, eager only, 2 steps of 4 rows (figures meaningless)")
    ap.add_argument("--base", help="a Hugging Face model folder to measure instead of random 125m/350m models")
    ap.add_argument("--micro", type=int, default=8, help="rows per micro-batch for --base")
    ap.add_argument("--one", nargs=3, metavar=("DIR", "SIZE", "COMPILE"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    import torch

    if args.base:
        args.sizes = "base"
    if args.smoke:
        args.sizes, args.steps, args.batch_tokens = ("base" if args.base else "tiny"), 2, 4 * SEQ
        args.micro = min(args.micro, 2)
    elif not torch.cuda.is_available():
        print("bench_train_gpu: no CUDA device visible to torch; nothing to measure (run it on a GPU machine).")
        return 0
    if args.one:
        d, size, comp = args.one
        print("RESULT " + json.dumps(one(Path(d), size, comp == "1", args.steps, args.batch_tokens, args.doc_masking,
                                         args.smoke, args.micro)))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-gpu-"))
    device = "CPU (smoke check)" if args.smoke else torch.cuda.get_device_name()
    print(f"device: {device}, torch {torch.__version__}; writing synthetic tokens to {tmp}")
    sizes = args.sizes.split(",")
    prepare(tmp, args.steps, args.batch_tokens, args.doc_masking, sizes, args.base)
    print(f"{'size':<6}{'compile':>8}{'MFU %':>8}{'tok/s':>12}{'data %':>8}{'mem GiB':>9}")
    for size in sizes:
        for comp in (False,) if args.smoke else (False, True):
            cmd = [sys.executable, __file__, "--one", str(tmp), size, "1" if comp else "0", "--steps", str(args.steps),
                   "--batch-tokens", str(args.batch_tokens), "--micro", str(args.micro)] + (["--doc-masking"] if args.doc_masking else []) \
                + (["--smoke"] if args.smoke else [])
            p = subprocess.run(cmd, capture_output=True, text=True)
            res = [json.loads(x[7:]) for x in p.stdout.splitlines() if x.startswith("RESULT ")]
            if p.returncode or not res:
                print(f"{size:<6}{str(comp):>8}  failed: {(p.stderr or p.stdout).strip().splitlines()[-1:]}")
                continue
            r = res[0]
            print(f"{size:<6}{str(comp):>8}{r['mfu(%)']:>8.1f}{r['tok/s']:>12,.0f}{r['data_loading(%)']:>8.2f}"
                  f"{r['peak_mem(GiB)']:>9.1f}")
    print("goal: MFU >= 45% on an H100 (bf16 dense peak 989 TFLOP/s), data loading <= 2% of step time")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
