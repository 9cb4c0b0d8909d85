"""LM scoring throughput: the `lm_score` stage vs a raw batched torch forward, same model and
documents; and PreSelect end to end per 1,000 documents.

    python bench/bench_lm_score.py [--mb 2] [--docs 600] [--size small] [--workers 2] [--device cpu]

1. builds a real-text corpus (`pipeline.commands.corpus.build_system_corpus`), ingests it, trains a
   sentencepiece tokenizer on it and writes a random Llama of `--size` (weights do not change the
   speed) as a Hugging Face folder;
2. raw peer: the documents tokenized beforehand, cut into the very same windows, batched to the
   same padded size, `model.hidden` + the output projection on scored positions + cross-entropy,
   under `torch.inference_mode` (bf16 autocast on CUDA): the forward alone, nothing else;
3. pipeline in one process: the runner's own worker (`MapStageWorker.run`: read the shard,
   tokenize, window, forward, write the delta shard and its marker), the code path an actor runs;
4. on CPU, pipeline on Ray with `--workers` actors (one torch thread each) against the raw forward
   in as many plain processes at once;
5. PreSelect end to end (`curate train-preselect`): a ladder of 3 models measured on a target
   set, N sampled documents scored by each, labels, fastText, bucket thresholds; seconds per
   1,000 documents.
Tokens are text tokens scored (each once). Model load and imports are outside both timings.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

SIZES = {"tiny": dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2),
         "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4),
         "125m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4)}


def write_model(folder: Path, tokenizer: Path, size: str, seed: int) -> Path:
    import shutil as sh

    import sentencepiece as spm

    from curate.training.hf_io import save_model
    from curate.training.model import LlamaModel, ModelConfig

    vocab = spm.SentencePieceProcessor(model_file=str(tokenizer)).get_piece_size()
    model = LlamaModel(ModelConfig(vocab_size=vocab, max_position_embeddings=1024, **SIZES[size]))
    model.reset_parameters(seed)
    save_model(model, folder)
    sh.copy(tokenizer, folder / "tokenizer.model")
    return folder


def raw_forward(sm, windows: list, batch_tokens: int) -> int:
    """The forward alone over prepared windows (sorted by length): returns tokens scored."""
    import torch
    import torch.nn.functional as F

    dev = sm.device
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else torch.autocast("cpu", enabled=False)
    n_tok, start = 0, 0
    with torch.inference_mode(), autocast:
        while start < len(windows):
            stop = start + 1
            while stop < len(windows) and (stop + 1 - start) * len(windows[stop].ids) <= batch_tokens:
                stop += 1
            batch = windows[start:stop]
            width = len(batch[-1].ids)
            ids = torch.full((len(batch), width), sm.start_id, dtype=torch.long)
            pick = torch.zeros((len(batch), width), dtype=torch.bool)
            targets = []
            for r, w in enumerate(batch):
                ids[r, :len(w.ids)] = torch.tensor(w.ids)
                pick[r, len(w.ids) - 1 - w.n_scored:len(w.ids) - 1] = True
                targets += w.ids[len(w.ids) - w.n_scored:]
            ids, pick = ids.to(dev), pick.to(dev)
            logits = sm.model.lm_head(sm.model.hidden(ids)[pick]).float()
            F.cross_entropy(logits, torch.tensor(targets, device=dev), reduction="sum").item()
            n_tok += len(targets)
            start = stop
    return n_tok


def prepared_windows(sm, texts: list[str], block: int, stride: int) -> list:
    from curate.training.bpb import windows

    wins = [w for i, ids in enumerate(sm.encode(texts)) for w in windows(i, [sm.start_id, *ids], 1, block, stride)]
    return sorted(wins, key=lambda w: len(w.ids))


def _raw_process(folder: str, texts: list[str], block: int, stride: int, batch_tokens: int, out) -> None:
    import torch

    torch.set_num_threads(1)
    from curate.training.bpb import load_scoring_model

    sm = load_scoring_model(folder)
    wins = prepared_windows(sm, texts, block, stride)
    raw_forward(sm, wins[:2], batch_tokens)  # first-call allocations outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    n = raw_forward(sm, wins, batch_tokens)
    out.put((n, time.perf_counter() - t0, time.process_time() - c0))


def raw_in_processes(folder: Path, shards: list[list[str]], n: int, block: int, stride: int, batch_tokens: int):
    """(tokens, wall and CPU seconds summed over `n` processes scoring at once, shards dealt round-robin)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_raw_process, args=(str(folder), [t for s in shards[i::n] for t in s], block, stride,
                                                    batch_tokens, out)) for i in range(n)]
    for p in procs:
        p.start()
    res = [out.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(r[0] for r in res), sum(r[1] for r in res), sum(r[2] for r in res)


class GPUUtil:
    """Mean GPU utilisation (nvidia-smi, every 200 ms) while the block runs; None without it."""

    def __enter__(self):
        self.samples, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while not self.stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"],
                                     capture_output=True, text=True, timeout=5).stdout.split()
                self.samples.append(float(out[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                return
            time.sleep(0.2)

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mean(self):
        return sum(self.samples) / len(self.samples) if self.samples else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=2.0, help="corpus size in MB")
    ap.add_argument("--docs", type=int, default=600, help="documents scored (the first of the corpus)")
    ap.add_argument("--size", choices=sorted(SIZES), default="small", help="model size (random weights)")
    ap.add_argument("--vocab", type=int, default=4000)
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--stride", type=int, default=256)
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--max-chars", type=int, default=4000, help="characters scored per document")
    ap.add_argument("--shard-docs", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="Ray actors (CPU)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in this process (actors use 1)")
    ap.add_argument("--repeats", type=int, default=3, help="best of N for the in-process timings")
    ap.add_argument("--preselect-docs", type=int, default=1000, help="documents for the PreSelect timing (0 skips)")
    ap.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    a = ap.parse_args()
    os.environ.setdefault("TQDM_DISABLE", "1")
    from curate.pipeline.running.adapter import ray_session

    with ray_session():  # one local Ray for every pipeline run below
        run(a)


def run(a: argparse.Namespace) -> None:

    import pyarrow.parquet as pq
    import torch

    from curate.pipeline.running.config import load_config
    from curate.pipeline.commands.corpus import build_system_corpus
    from curate.pipeline.running.runner import run_pipeline
    from curate.pipeline.running.stagework import MapJob, MapStageWorker, stage_config_hash
    from curate.stages import shardio
    from curate.stages.tokens.tokenizers import TokenizerConfig, train_tokenizer
    from curate.training.bpb import load_scoring_model

    torch.set_num_threads(a.threads)
    work = Path(a.keep or tempfile.mkdtemp(prefix="bench_lm_"))
    corpus = work / "system.jsonl"
    if not corpus.exists():
        build_system_corpus(corpus, max_mb=a.mb)
    head = work / "docs.jsonl"
    head.write_text("".join(corpus.read_text().splitlines(keepends=True)[:a.docs]))
    run_dir = work / "run"
    base = {"name": "bench", "out": str(run_dir), "inputs": [{"path": str(head)}],
            "ingest": {"shard_docs": a.shard_docs}, "ray": {"workers": a.workers}}
    run_pipeline(load_config(data={**base, "stages": []}), quiet=True)
    parts = sorted((run_dir / "ingest").glob("*.parquet"))
    shards = [[t[:a.max_chars] for t in pq.read_table(p, columns=["text"]).column("text").to_pylist()] for p in parts]
    texts = [t for s in shards for t in s]
    tok = work / "sp.model"
    train_tokenizer(texts, TokenizerConfig(vocab_size=a.vocab, train_chars=4_000_000), tok)
    folder = write_model(work / "model", tok, a.size, seed=0)
    sm = load_scoring_model(folder, device=a.device)
    params = sum(p.numel() for p in sm.model.parameters())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{a.threads} thread(s) here; device {a.device}")
    print(f"model: {a.size}, {params / 1e6:.1f}M params, vocab {a.vocab}; {len(texts)} documents "
          f"(first {a.max_chars} chars), {len(parts)} shards; block {a.block}, stride {a.stride}, batch {a.batch_tokens} tokens")

    wins = prepared_windows(sm, texts, a.block, a.stride)
    stage = {"kind": "lm_score", "models": [{"path": str(folder), "name": "bench"}], "block": a.block, "stride": a.stride,
             "batch_tokens": a.batch_tokens, "max_chars": a.max_chars, "device": a.device}
    cfg = load_config(data={**base, "stages": [stage]})
    spec = cfg.stage_specs[0]
    worker = MapStageWorker(spec)()
    chash = stage_config_hash(spec)
    raw_forward(sm, wins[:2], a.batch_tokens)

    def pipeline_once() -> int:
        out = work / "inproc"
        shutil.rmtree(out, ignore_errors=True)
        return sum(worker.run(MapJob(str(p), str(out / "lm"), str(out / "rejected"), shardio.file_digest(p), chash))
                   ["counts"]["lm_tokens"] for p in parts)

    # Interleaved, best of N each: both sides see the same background load. CPU seconds of this
    # process are reported beside wall seconds: on a loaded machine they measure the work itself.
    raws, pipes = [], []
    util = None
    for _ in range(a.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        n_raw = raw_forward(sm, wins, a.batch_tokens)
        raws.append((time.perf_counter() - t0, time.process_time() - c0))
        with GPUUtil() as g:
            t0, c0 = time.perf_counter(), time.process_time()
            n_pipe = pipeline_once()
            pipes.append((time.perf_counter() - t0, time.process_time() - c0))
        util = g.mean if a.device.startswith("cuda") else None
    assert n_raw == n_pipe, (n_raw, n_pipe)
    raw_s, pipe_s = min(w for w, _ in raws), min(w for w, _ in pipes)
    raw_c, pipe_c = min(c for _, c in raws), min(c for _, c in pipes)
    print(f"raw batched forward          : {n_raw / raw_s:10,.0f} tok/s by wall, {n_raw / raw_c:10,.0f} by CPU time "
          f"({n_raw:,} tokens, best of {a.repeats})")
    print(f"lm_score stage, in-process   : {n_pipe / pipe_s:10,.0f} tok/s by wall, {n_pipe / pipe_c:10,.0f} by CPU time "
          f"= {100 * raw_s / pipe_s:.0f}% / {100 * raw_c / pipe_c:.0f}% of raw"
          + (f"; GPU utilisation {util:.0f}%" if util is not None else ""))

    if a.device == "cpu" and a.workers > 1:
        n_par, raw_par, raw_cpu = raw_in_processes(folder, shards, a.workers, a.block, a.stride, a.batch_tokens)
        shutil.rmtree(run_dir / "lm_score", ignore_errors=True)
        run_pipeline(cfg, quiet=True)
        markers = [shardio.read_marker(run_dir / "lm_score", p.stem) for p in parts]
        core_s = sum(m["seconds"] for m in markers)
        cpu_s = sum(m["cpu_seconds"] for m in markers)
        n_ray = sum(m["counts"]["lm_tokens"] for m in markers)
        print(f"raw forward, {a.workers} processes    : {n_par / raw_par:10,.0f} tok/s per core by wall, "
              f"{n_par / raw_cpu:10,.0f} by CPU time")
        print(f"lm_score on Ray, {a.workers} actors   : {n_ray / core_s:10,.0f} tok/s per core by wall, "
              f"{n_ray / cpu_s:10,.0f} by CPU time (shard seconds) = {100 * (n_ray / core_s) / (n_par / raw_par):.0f}% / "
              f"{100 * (n_ray / cpu_s) / (n_par / raw_cpu):.0f}% of raw in {a.workers} processes")

    if a.preselect_docs:
        preselect_timing(a, work, corpus, tok)
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)


def preselect_timing(a, work: Path, corpus: Path, tok: Path) -> None:
    """`train_preselect` end to end on `--preselect-docs` documents with a ladder of 3 models."""
    import json

    from curate.pipeline.commands.preselect import train_preselect
    from curate.pipeline.running.config import load_config
    from curate.pipeline.running.runner import run_pipeline

    run_dir = work / "ps_run"
    run_pipeline(load_config(data={"name": "ps", "out": str(run_dir), "inputs": [{"path": str(corpus)}],
                                   "ray": {"workers": a.workers}}), quiet=True)
    ladder = [write_model(work / f"ladder{i}", tok, a.size, seed=i + 1) for i in range(3)]
    target = work / "target.jsonl"
    lines = corpus.read_text().splitlines()
    target.write_text("".join(json.dumps({"text": json.loads(x)["text"][:a.max_chars]}) + "\n" for x in lines[-50:]))
    t0 = time.perf_counter()
    meta = train_preselect(str(run_dir), [str(m) for m in ladder], target_set=[str(target)], sample=a.preselect_docs,
                           min_positives=10, block=a.block, stride=a.stride, batch_tokens=a.batch_tokens,
                           device=a.device, max_chars=a.max_chars)
    total = time.perf_counter() - t0
    n = meta["labels"]["documents"]
    t = meta["timings"]
    print(f"PreSelect end to end: {n} documents x 3 models ({a.size}) + 50 target documents "
          f"(first {a.max_chars} chars each): {total:.1f} s = "
          f"{1000 * total / n:.1f} s per 1,000 documents (target {t['target_seconds']:.1f} s, scoring {t['score_seconds']:.1f} s, "
          f"labels + fastText + buckets {t['train_seconds']:.1f} s); {json.dumps(meta['labels'])}")


if __name__ == "__main__":
    main()
