"""Synthetic token files and plans in the packer's exact on-disk format (docs/internals.md).

Used by the tests and by `bench/bench_train_gpu.py`, which must run on a machine with no network
and no pipeline run: it writes its own `tokens/` and `plan.json`. Each group's documents come from
its own simple Markov chain, so per-group losses differ and fall as a model learns them.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Sequence

import numpy as np


def markov_docs(n_docs: int, vocab_size: int, seed: int, mean_len: int = 60, first_id: int = 3) -> list[np.ndarray]:
    """Documents from a sparse random transition table (4 likely successors per token)."""
    rng = np.random.default_rng(seed)
    span = vocab_size - first_id
    succ = rng.integers(first_id, vocab_size, size=(vocab_size, 4))
    docs = []
    for _ in range(n_docs):
        n = max(2, int(rng.exponential(mean_len)))
        doc = np.empty(n, dtype=np.int64)
        doc[0] = first_id + rng.integers(span)
        picks = rng.integers(0, 4, size=n)
        for i in range(1, n):
            doc[i] = succ[doc[i - 1], picks[i]]
        docs.append(doc)
    return docs


def random_docs(n_tokens: int, vocab_size: int, seed: int, mean_len: int = 1000, first_id: int = 3) -> list[np.ndarray]:
    """Uniform random documents totalling about `n_tokens` (fast; for throughput benchmarks)."""
    rng = np.random.default_rng(seed)
    flat = rng.integers(first_id, vocab_size, size=n_tokens)
    cuts = np.cumsum(np.maximum(2, rng.exponential(mean_len, size=n_tokens // max(mean_len // 2, 1) + 1)).astype(np.int64))
    return [d for d in np.split(flat, cuts[cuts < n_tokens]) if len(d)]


def write_indexed(prefix: Path, docs: Sequence[np.ndarray], dtype: np.dtype) -> None:
    """A Megatron MMIDIDX dataset (version 1), one sequence per document; written here byte by byte
    from Megatron's format (not through stages/tokens/megatron.py, which training/ may not import) so the
    tests cross-check the packer's reader against an independent writer."""
    dtype = np.dtype(dtype)
    code = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4, np.dtype(np.int64): 5}[dtype]
    lengths = np.array([len(d) for d in docs], dtype=np.int32)
    pointers = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)[:-1] * dtype.itemsize]).astype(np.int64)
    # f"{prefix}.bin", not with_suffix: a prefix such as "tokens.v2" keeps its dot.
    with open(f"{prefix}.bin", "wb") as f:
        for d in docs:
            f.write(np.asarray(d, dtype=dtype).tobytes())
    with open(f"{prefix}.idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, code, len(docs), len(docs) + 1))
        f.write(lengths.tobytes() + pointers[: len(docs)].tobytes())
        f.write(np.arange(len(docs) + 1, dtype=np.int64).tobytes())


def pack_rows(docs: Sequence[np.ndarray], seq_len: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate documents and cut rows of seq_len + 1; segs number the pieces within a row."""
    width = seq_len + 1
    toks = np.concatenate(docs) if docs else np.zeros(0, np.int64)
    doc_of = np.repeat(np.arange(len(docs)), [len(d) for d in docs])
    n_rows = -(-len(toks) // width)
    rows = np.full(n_rows * width, pad_id, dtype=np.int64)
    rows[: len(toks)] = toks
    owner = np.full(n_rows * width, -1, dtype=np.int64)
    owner[: len(toks)] = doc_of
    rows, owner = rows.reshape(n_rows, width), owner.reshape(n_rows, width)
    segs = np.zeros_like(owner, dtype=np.uint16)
    for r in range(n_rows):
        o = owner[r]
        new = np.concatenate([[True], o[1:] != o[:-1]]) & (o >= 0)
        segs[r] = np.where(o >= 0, np.cumsum(new), 0)
    return rows, segs


def write_tokens(run_dir: Path, groups: dict[str, Sequence[np.ndarray]], seq_len: int, vocab_size: int,
                 bos_id: int = 1, eos_id: int = 2, pad_id: int = 0, with_segs: bool = True) -> Path:
    """Write `run_dir/tokens/` (index.json, per group tokens.bin/.idx, rows.bin, segs.bin, meta.json)."""
    dtype = np.dtype(np.uint16 if vocab_size < 65536 else np.int32)
    tokens = Path(run_dir) / "tokens"
    index = {"groups": {}, "seq_len": seq_len, "vocab_size": vocab_size, "dtype": dtype.name}
    for name, docs in groups.items():
        d = tokens / name
        d.mkdir(parents=True, exist_ok=True)
        docs = [np.append(np.asarray(x, dtype=np.int64), eos_id) for x in docs]
        write_indexed(d / "tokens", docs, dtype)
        rows, segs = pack_rows(docs, seq_len, pad_id)
        (d / "rows.bin").write_bytes(rows.astype(dtype).tobytes())
        if with_segs:
            (d / "segs.bin").write_bytes(segs.tobytes())
        n_tok = int(sum(len(x) for x in docs))
        meta = {"seq_len": seq_len, "dtype": dtype.name, "n_rows": int(len(rows)), "vocab_size": vocab_size,
                "bos_id": bos_id, "eos_id": eos_id, "pad_id": pad_id, "packing": "concat", "n_docs": len(docs),
                "n_doc_tokens": n_tok, "n_pad": int(rows.size - n_tok), "truncated_docs": 0}
        (d / "meta.json").write_text(json.dumps(meta, indent=2))
        index["groups"][name] = {"n_docs": len(docs), "n_tokens": n_tok, "n_rows": int(len(rows))}
    (tokens / "index.json").write_text(json.dumps(index, indent=2))
    return tokens


def write_plan(run_dir: Path, phases: Sequence[dict[str, float]], boundaries: Sequence[int], seq_len: int,
               schedule: dict, available: dict[str, int], max_epochs: float = 100.0) -> dict:
    """A valid plan.json (`mixtures.schema.validate_plan`) with `len(phases)` phases ending at `boundaries`.

    Every phase lists every group of `available` (weight 0 where the phase leaves it out); its
    tokens are the largest-remainder split of the phase length, so they add up to it exactly.
    """
    from curate.mixtures.allocate import largest_remainder
    from curate.mixtures.schedule import lr_at
    from curate.mixtures.schema import validate_plan

    names = list(available)
    unknown = sorted({g for p in phases for g in p} - set(names))
    if unknown:
        raise ValueError(f"groups {unknown} have weights but no entry in `available`")
    total = int(boundaries[-1])
    sched = {**schedule, "total_tokens": total}
    out_phases, start = [], 0
    for i, (weights, end) in enumerate(zip(phases, boundaries)):
        w = {g: float(weights.get(g, 0.0)) for g in names}
        toks = largest_remainder(int(end) - start, w, names)
        blend = " ".join(f"{w[g]} tokens/{g}/tokens" for g in names if w[g] > 0)
        out_phases.append({"name": f"phase{i + 1}", "start_token": start, "end_token": int(end),
                           "lr_start": lr_at(sched, start), "lr_end": lr_at(sched, end), "weights": w,
                           "tokens": toks, "megatron_blend": blend})
        start = int(end)
    groups = []
    for g, avail in available.items():
        req = sum(p["tokens"][g] for p in out_phases)
        groups.append({"name": g, "where": f"source = '{g}'", "documents": 0, "available_tokens": int(avail),
                       "requested_tokens": req, "epochs": req / max(avail, 1), "max_epochs": max_epochs})
    plan = {"schema_version": 1, "recipe": "synthetic", "total_tokens": total, "seq_len": seq_len,
            "token_counts": "exact", "tokens_per_char": 0.25, "schedule": sched, "groups": groups,
            "phases": out_phases, "unassigned": {"documents": 0, "tokens": 0}}
    validate_plan(plan)
    (Path(run_dir) / "plan.json").write_text(json.dumps(plan, indent=2))
    return plan


def synthetic_run(run_dir: Path, seq_len: int = 32, vocab_size: int = 128, docs_per_group: int = 200,
                  phases: Sequence[dict[str, float]] | None = None, boundaries: Sequence[int] | None = None,
                  schedule: dict | None = None, seed: int = 0, with_segs: bool = True, mean_len: int = 60) -> dict:
    """A complete synthetic run directory (tokens/ and plan.json); returns the plan."""
    phases = phases or [{"web": 0.7, "code": 0.3}, {"web": 0.4, "code": 0.3, "qa": 0.3}]
    names = sorted({g for p in phases for g in p})
    docs = {g: markov_docs(docs_per_group, vocab_size, seed * 1000 + i, mean_len) for i, g in enumerate(names)}
    write_tokens(run_dir, docs, seq_len, vocab_size, with_segs=with_segs)
    boundaries = boundaries or [seq_len * 64 * (i + 1) for i in range(len(phases))]
    schedule = schedule or {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0}
    avail = {g: int(sum(len(d) + 1 for d in docs[g])) for g in names}
    return write_plan(run_dir, phases, boundaries, seq_len, schedule, avail)
