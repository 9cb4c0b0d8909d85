"""Tokenization throughput of `curate pack` vs raw sentencepiece, and best-fit packing quality.

    python bench/bench_tokenize.py [--mb 16] [--shards 8] [--vocab-size 32000] [--seq-len 2048]

Both sides encode the same documents with the same model in one process tree on this machine:
  raw       SentencePieceProcessor.encode(texts, num_threads=N) on a list in memory (1 and N threads)
  pipeline  the `tokenize` stage of `curate pack` on a warm local Ray with N workers: read each
            shard, assign groups with DuckDB, encode, write the ids and the shard with n_tokens
Then both packers run on the result at --seq-len: padding share and truncated documents.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=16.0, help="corpus size (real text found on this machine)")
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--vocab-size", type=int, default=32000)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from curate.pipeline.running.adapter import RayExecutor, ray_session
    from curate.pipeline.commands.pack import pack
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.stages.tokenize import TokenizeTask, TokenizerConfig, load_tokenizer, tokenize_shard, train_tokenizer
    from test_pack_common import load_docs, make_run

    tmp = Path(tempfile.mkdtemp(prefix="bench-tokenize-"))
    build_system_corpus(tmp / "corpus.jsonl", max_mb=args.mb)
    docs = load_docs(tmp / "corpus.jsonl")
    texts = [d["text"] for d in docs]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    model = tmp / "tokenizer.model"
    t0 = time.perf_counter()
    train_tokenizer(texts, TokenizerConfig(vocab_size=args.vocab_size, train_chars=8_000_000), model)
    print(f"machine: {os.cpu_count()} CPUs; corpus: {len(texts)} documents, {mb:.1f} MB; "
          f"tokenizer: vocab {args.vocab_size}, trained in {time.perf_counter() - t0:.1f}s")

    sp = load_tokenizer(model)
    run = make_run(tmp / "run", docs, n_parts=args.shards)
    threads = sorted({1, args.workers})
    raw = {t: float("inf") for t in threads}
    pipe = float("inf")
    with ray_session(num_cpus=args.workers):
        RayExecutor(args.workers).map(abs, list(range(args.workers)))  # warm the workers
        # Interleaved repetitions, best of each: a shared machine's load then hits both sides alike.
        for rep in range(args.repeats):
            for t in threads:
                t0 = time.perf_counter()
                sp.encode(texts, num_threads=t)
                raw[t] = min(raw[t], time.perf_counter() - t0)
            for p in [*(run / "tokenize" / "_done").glob("*.json"), *(run / "tokens" / "_done").glob("all.json")]:
                p.unlink()  # so the stage encodes and packs again
            index = pack(run, tokenizer=str(model), seq_len=args.seq_len, workers=args.workers, echo=lambda s: None).index
            pipe = min(pipe, index["seconds"]["tokenize"])
        concat = pack(run, packing="concat", seq_len=args.seq_len, workers=args.workers, echo=lambda s: None).index
    for t in threads:
        print(f"raw sentencepiece encode(list, num_threads={t}): {mb / raw[t]:.2f} MB/s")
    print(f"pipeline tokenize stage on Ray, {args.workers} workers, {args.shards} shards: {mb / pipe:.2f} MB/s "
          f"= {100 * raw[args.workers] / pipe:.0f}% of raw with {args.workers} threads (goal >= 90%)")
    # CPU time in this process (robust to other jobs' load): raw encode vs the stage's shard work.
    shutil.rmtree(run / "tokenize")
    t0 = time.process_time()
    sp.encode(texts, num_threads=1)
    raw_cpu = time.process_time() - t0
    tasks = [TokenizeTask(str(p), str(run / "tokenize"), str(model), "'all'", "bench", threads=1)
             for p in sorted((run / "ingest").glob("*.parquet"))]
    tokenize_shard(tasks[0])  # imports and caches, as a warm worker has them
    shutil.rmtree(run / "tokenize")
    t0 = time.process_time()
    for task in tasks:
        tokenize_shard(task)
    stage_cpu = time.process_time() - t0
    print(f"CPU time, one process: raw encode {raw_cpu:.2f}s, tokenize stage {stage_cpu:.2f}s "
          f"-> stage at {100 * raw_cpu / stage_cpu:.0f}% of raw per CPU second")
    g, c = index["groups"]["all"], concat["groups"]["all"]
    print(f"packing at seq_len {args.seq_len}, {g['n_docs']} documents, {g['n_tokens']:,} tokens "
          f"(best-fit placement+write {index['seconds']['pack']:.2f}s):")
    print(f"  best-fit: {g['n_rows']} rows, padding {100 * g['padding_share']:.3f}%, truncated documents {g['truncated_docs']}")
    print(f"  concat:   {c['n_rows']} rows, padding {100 * c['padding_share']:.3f}%, truncated documents {c['truncated_docs']}")


if __name__ == "__main__":
    main()
