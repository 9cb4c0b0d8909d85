"""Pack a group's documents into training rows of `seq_len + 1` tokens.

A row of `seq_len + 1` tokens gives `seq_len` (input, target) pairs, so a row's capacity is
`C = seq_len + 1` and every "document" here is its tokens with the separators (EOS, and BOS when
asked) already attached, exactly as it sits in the group's `tokens.bin`.

Two packers, both deterministic for a seed:

- **concat**: shuffle documents, concatenate, cut every `C` tokens (the classic GPT recipe).
  Any document crossing a row boundary is cut ("truncated"): its tail lands in another row with
  no context.
- **best-fit** (best-fit-decreasing, Ding et al. 2024, "Fewer Truncations Improve Language
  Modeling", arXiv:2404.10830): documents of at most `C` tokens stay whole; longer ones are cut
  into `C`-token chunks (each a full row) plus a remainder. The remainders and whole documents are
  placed, longest first, into the open row with the least room that still fits them. Open rows
  are bucketed by remaining capacity (at most `C` distinct values), and a sorted list of the
  non-empty capacities is searched by bisection, so each placement is O(log C) search plus an
  O(C) memmove in the worst case: O(n log n) overall for the sort, never O(n * rows).

Output (per group, see docs/internals.md "Token shards"): `rows.bin` (n_rows x C token ids, pad
where no document is) and `segs.bin` (uint16, same shape: 0 = padding, k = k-th document piece of
the row), so the trainer can mask attention and loss across documents.
"""

from __future__ import annotations

import os
from bisect import bisect_left, insort
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from curate.records.marker import Marker
from curate.stages import docshard, ledger, shardio
from curate.stages.heldout import holdout
from curate.stages.tokens.megatron import IndexedDataset, IndexedDatasetWriter, read_indexed_dataset
from curate.stages.shardio import AtomicFile

PACKINGS = ("best-fit", "concat")
DATA_FILES = ("tokens.bin", "tokens.idx", "rows.bin", "segs.bin")  # besides meta.json; none for an empty group
MAX_SEQ_LEN = 65534  # segment ids are uint16 and a row can hold up to C one-token pieces


@dataclass
class PackConfig:
    """How token rows are built."""

    seq_len: int = 2048
    """Training context length; rows hold seq_len + 1 tokens (inputs row[:-1], targets row[1:])."""
    packing: str = "best-fit"
    """"best-fit" (whole documents, fewest truncations) or "concat" (concatenate and chunk)."""
    seed: int = 0
    """Seeds the document shuffle (concat), tie order and row order (best-fit)."""
    add_bos: bool = False
    """Put BOS before every document (EOS always follows every document)."""
    rows_per_chunk: int = 1024
    """Rows assembled in memory at a time while writing rows.bin (bounds memory use)."""
    eval_fraction: float = 0.005
    """Share of each group held out as evaluation data (by a hash of the id; stages/heldout/holdout.py); 0 = none."""
    eval_max_docs: int = 1000
    """At most this many held-out documents per group."""

    def __post_init__(self) -> None:
        if not 8 <= self.seq_len <= MAX_SEQ_LEN:
            raise ValueError(f"seq_len must be in [8, {MAX_SEQ_LEN}], got {self.seq_len}")
        if self.packing not in PACKINGS:
            raise ValueError(f"packing must be one of {PACKINGS}, got {self.packing!r}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.rows_per_chunk < 1:
            raise ValueError(f"rows_per_chunk must be >= 1, got {self.rows_per_chunk}")
        if not 0 <= self.eval_fraction < 1 or self.eval_max_docs < 0:
            raise ValueError(f"eval_fraction must be in [0, 1) and eval_max_docs >= 0, "
                             f"got {self.eval_fraction} and {self.eval_max_docs}")


@dataclass
class Placement:
    """Where every document piece goes, ordered by (row, position in row).

    Pieces of a row sit back to back from position 0; the rest of the row is padding.
    """

    doc: np.ndarray  # int64: the document (sequence index in tokens.bin)
    start: np.ndarray  # int64: first token of the piece inside its document
    length: np.ndarray  # int64
    row: np.ndarray  # int64: output row
    n_rows: int
    truncated_docs: int  # documents split over more than one row

    @property
    def n_tokens(self) -> int:
        return int(self.length.sum())


def _check_lengths(lengths: np.ndarray) -> np.ndarray:
    lengths = np.asarray(lengths, dtype=np.int64)
    if len(lengths) and lengths.min() < 1:
        raise ValueError("every document needs at least one token (its EOS)")
    return lengths


def concat_placement(lengths: np.ndarray, capacity: int, seed: int) -> Placement:
    """Shuffle, concatenate, chunk every `capacity` tokens."""
    lengths = _check_lengths(lengths)
    order = np.random.default_rng(seed).permutation(len(lengths))
    lens = lengths[order]
    ends = np.cumsum(lens)
    starts = ends - lens
    first = starts // capacity
    last = (ends - 1) // capacity
    n_pieces = last - first + 1
    doc = np.repeat(order, n_pieces)
    # j-th piece of each document: j = 0 .. n_pieces - 1
    j = np.arange(int(n_pieces.sum()), dtype=np.int64) - np.repeat(np.cumsum(n_pieces) - n_pieces, n_pieces)
    row = np.repeat(first, n_pieces) + j
    g_start = np.maximum(np.repeat(starts, n_pieces), row * capacity)
    g_end = np.minimum(np.repeat(ends, n_pieces), (row + 1) * capacity)
    total = int(ends[-1]) if len(ends) else 0
    return Placement(
        doc=doc,
        start=g_start - np.repeat(starts, n_pieces),
        length=g_end - g_start,
        row=row,
        n_rows=-(-total // capacity),
        truncated_docs=int((n_pieces > 1).sum()),
    )


def best_fit_bins(sizes: list[int], capacity: int) -> tuple[np.ndarray, int]:
    """Best-fit: place each size (in the given order) into the open bin with the least room that fits.

    Returns the bin of each item and the number of bins. Bins are bucketed by remaining room:
    `buckets[r]` is a stack of bins with exactly `r` tokens free, `rooms` the sorted list of
    non-empty `r`. Full bins leave the structure.
    """
    buckets: list[list[int]] = [[] for _ in range(capacity + 1)]
    rooms: list[int] = []
    assign = np.empty(len(sizes), dtype=np.int64)
    n_bins = 0
    for i, size in enumerate(sizes):
        k = bisect_left(rooms, size)
        if k == len(rooms):
            b = n_bins
            n_bins += 1
            room = capacity - size
        else:
            r = rooms[k]
            stack = buckets[r]
            b = stack.pop()
            if not stack:
                del rooms[k]
            room = r - size
        if room:
            stack = buckets[room]
            if not stack:
                insort(rooms, room)
            stack.append(b)
        assign[i] = b
    return assign, n_bins


def best_fit_placement(lengths: np.ndarray, capacity: int, seed: int) -> Placement:
    """Best-fit-decreasing packing (arXiv:2404.10830) with long documents cut into full rows."""
    lengths = _check_lengths(lengths)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))  # seeded tie order among equal lengths
    lens = lengths[order]
    n_full = lens // capacity
    rem = lens % capacity

    # Full chunks: one row each, numbered first.
    full_doc = np.repeat(order, n_full)
    full_k = np.arange(int(n_full.sum()), dtype=np.int64) - np.repeat(np.cumsum(n_full) - n_full, n_full)
    n_full_rows = len(full_doc)

    # Remainders and whole documents, longest first (stable: ties keep the seeded order).
    has_rem = rem > 0
    item_doc = order[has_rem]
    item_len = rem[has_rem]
    item_start = (n_full * capacity)[has_rem]
    by_size = np.argsort(-item_len, kind="stable")
    item_doc, item_len, item_start = item_doc[by_size], item_len[by_size], item_start[by_size]
    bins, n_bins = best_fit_bins(item_len.tolist(), capacity)

    doc = np.concatenate([full_doc, item_doc])
    start = np.concatenate([full_k * capacity, item_start])
    length = np.concatenate([np.full(n_full_rows, capacity, dtype=np.int64), item_len])
    row = np.concatenate([np.arange(n_full_rows, dtype=np.int64), bins + n_full_rows])
    n_rows = n_full_rows + n_bins
    # Rows in a seeded random order, so a sequential reader does not see all long rows first.
    row = rng.permutation(n_rows)[row] if n_rows else row
    arrival = np.arange(len(doc))
    sort = np.lexsort((arrival, row))
    return Placement(
        doc=doc[sort],
        start=start[sort],
        length=length[sort],
        row=row[sort],
        n_rows=n_rows,
        truncated_docs=int((lens > capacity).sum()),
    )


def place(lengths: np.ndarray, cfg: PackConfig) -> Placement:
    fn = best_fit_placement if cfg.packing == "best-fit" else concat_placement
    return fn(lengths, cfg.seq_len + 1, cfg.seed)


def write_rows(ds: IndexedDataset, placement: Placement, cfg: PackConfig, out_dir: Path, pad_id: int) -> dict:
    """Write `rows.bin` and `segs.bin` for `placement` over the documents of `ds`."""
    cap = cfg.seq_len + 1
    p = placement
    n = len(p.doc)
    # Position of each piece in its row, and its 1-based rank there (the segment id).
    row_first = np.searchsorted(p.row, p.row, side="left")
    csum = np.cumsum(p.length)
    pos = csum - p.length - (csum[row_first] - p.length[row_first]) if n else csum
    seg = (np.arange(n) - row_first + 1) if n else row_first
    if n and seg.max() > np.iinfo(np.uint16).max:
        raise ValueError("a row holds more than 65535 pieces; lower seq_len")
    src = ds.offsets[p.doc] + p.start if n else p.start
    tokens = ds.tokens
    with AtomicFile(out_dir / "rows.bin") as rows_f, AtomicFile(out_dir / "segs.bin") as segs_f:
        for r0 in range(0, p.n_rows, cfg.rows_per_chunk):
            r1 = min(p.n_rows, r0 + cfg.rows_per_chunk)
            a, b = np.searchsorted(p.row, [r0, r1])
            out = np.full((r1 - r0) * cap, pad_id, dtype=ds.dtype)
            segs = np.zeros((r1 - r0) * cap, dtype=np.uint16)
            ln = p.length[a:b]
            within = np.arange(int(ln.sum()), dtype=np.int64) - np.repeat(np.cumsum(ln) - ln, ln)
            dest = np.repeat((p.row[a:b] - r0) * cap + pos[a:b], ln) + within
            out[dest] = tokens[np.repeat(src[a:b], ln) + within]
            segs[dest] = np.repeat(seg[a:b], ln)
            rows_f.write(out)
            segs_f.write(segs)
    n_tok = p.n_tokens
    return {
        "n_rows": p.n_rows,
        "n_pad": p.n_rows * cap - n_tok,
        "n_row_tokens": p.n_rows * cap,
        "truncated_docs": p.truncated_docs,
        "padding_share": (p.n_rows * cap - n_tok) / (p.n_rows * cap) if p.n_rows else 0.0,
    }


def read_rows(out_dir: Path, seq_len: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Memory maps of (rows, segs), each n_rows x (seq_len + 1)."""
    cap = seq_len + 1

    def mm(name: str, dt) -> np.ndarray:
        path = Path(out_dir) / name
        if path.stat().st_size == 0:
            return np.zeros((0, cap), dtype=dt)
        return np.memmap(path, dtype=dt, mode="r").reshape(-1, cap)

    return mm("rows.bin", dtype), mm("segs.bin", np.uint16)


@dataclass(frozen=True)
class GroupTask:
    """Build one group's token files from the tokenize stage's shards (plain data for a Ray task)."""

    group: str
    out_dir: str  # tokens/<group>
    parts: tuple[str, ...]  # tokenize/<part>.parquet, in order
    id_files: tuple[str, ...]  # tokenize/_ids/<part>.bin, same order
    dtype: str
    bos_id: int
    eos_id: int
    pad_id: int
    cfg: PackConfig
    input_fingerprint: str
    config_hash: str
    meta: tuple[tuple[str, object], ...] = ()  # extra meta.json fields (vocab_size, tokenizer)
    max_batch_tokens: int = 1 << 23
    eval_path: str = ""  # RUN/eval/<group>.parquet for the group's held-out documents; "" = hold none out
    exclude: tuple[str, ...] = ()  # ids held out for evaluation sets defined over the catalog


def _group_sequences(task: GroupTask, part: str, ids_file: str, skip: frozenset = frozenset()):
    """Yield (tokens, lengths) of the group's documents in one shard, separators attached;
    documents whose id is in `skip` (held out for evaluation) are left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = docshard.read_docs(Path(part), columns=["n_tokens", "group"] + (["id"] if skip else []))
    n = table.column("n_tokens").to_numpy().astype(np.int64)
    sel = pc.fill_null(pc.equal(table.column("group"), task.group), False).to_numpy(zero_copy_only=False)
    if skip:
        held = pc.is_in(table.column("id"), value_set=pa.array(sorted(skip), pa.string()))
        sel &= ~pc.fill_null(held, False).to_numpy(zero_copy_only=False)
    if not sel.any():
        return
    dtype = np.dtype(task.dtype)
    ids = np.memmap(ids_file, dtype=dtype, mode="r") if Path(ids_file).stat().st_size else np.zeros(0, dtype)
    if len(ids) != n.sum():
        raise ValueError(f"{ids_file} holds {len(ids)} tokens but {part} counts {int(n.sum())}; rerun the pack")
    offs = (np.cumsum(n) - n)[sel]
    lens = n[sel]
    bos = int(task.cfg.add_bos)
    # Batches of documents bounded by token count keep the index arrays small.
    cum = np.cumsum(lens)
    start = 0
    while start < len(lens):
        stop = max(start + 1, int(np.searchsorted(cum, cum[start] - lens[start] + task.max_batch_tokens, "right")))
        tl = lens[start:stop]
        seq = tl + 1 + bos
        seq_start = np.cumsum(seq) - seq
        out = np.empty(int(seq.sum()), dtype=dtype)
        if bos:
            out[seq_start] = task.bos_id
        out[seq_start + seq - 1] = task.eos_id
        within = np.arange(int(tl.sum()), dtype=np.int64) - np.repeat(np.cumsum(tl) - tl, tl)
        out[np.repeat(seq_start + bos, tl) + within] = ids[np.repeat(offs[start:stop], tl) + within]
        yield out, seq
        start = stop


def pack_group(task: GroupTask) -> dict:
    """tokens.bin/.idx, rows.bin, segs.bin and meta.json of one group; skipped when its marker
    matches and its files are still the ones it records. Otherwise rebuilt; the returned meta then
    says why under `rebuilt` when the marker matched but a file did not."""
    out_dir = Path(task.out_dir)
    marker_dir = out_dir.parent
    marker = ledger.current(marker_dir, task.group, task.input_fingerprint, task.config_hash, intact=False)
    rebuilt = None
    if marker is not None:
        rebuilt = _damage(task, marker)
        if rebuilt is None:
            return {**marker.extra["meta"], "skipped": True}
    held = holdout.select_group(task.parts, task.group, task.cfg.eval_fraction,
                                task.cfg.eval_max_docs) if task.eval_path else []
    skip = frozenset(held) | frozenset(task.exclude)
    sequences = (s for part, ids in zip(task.parts, task.id_files) for s in _group_sequences(task, part, ids, skip))
    first = next(sequences, None)
    if first is None:
        # No document to train on: write no dataset. An empty .bin cannot be memory-mapped (numpy,
        # megatron-core); meta.json says n_rows 0, and the plan gives such a group no tokens.
        for name in DATA_FILES:
            (out_dir / name).unlink(missing_ok=True)
        out_dir.mkdir(parents=True, exist_ok=True)
        stats = {"n_rows": 0, "n_pad": 0, "n_row_tokens": 0, "truncated_docs": 0, "padding_share": 0.0}
        n_docs = n_tokens = 0
    else:
        with IndexedDatasetWriter(out_dir / "tokens", np.dtype(task.dtype)) as w:
            w.add(*first)
            for tokens, lengths in sequences:
                w.add(tokens, lengths)
        ds = read_indexed_dataset(out_dir / "tokens")
        stats = write_rows(ds, place(ds.lengths, task.cfg), task.cfg, out_dir, task.pad_id)
        n_docs = len(ds)
        n_tokens = int(ds.lengths.sum(dtype=np.int64))
    if task.eval_path:
        holdout.write_eval_set(Path(task.eval_path), holdout.collect(task.parts, held, task.group))
    meta = {
        "group": task.group,
        "seq_len": task.cfg.seq_len,
        "dtype": task.dtype,
        "bos_id": task.bos_id,
        "eos_id": task.eos_id,
        "pad_id": task.pad_id,
        "add_bos": task.cfg.add_bos,
        "packing": task.cfg.packing,
        "seed": task.cfg.seed,
        "n_docs": n_docs,
        # n_doc_tokens = n_tokens: document tokens with their separators, so n_doc_tokens + n_pad
        # = n_rows * (seq_len + 1); n_text_tokens: without separators (= the catalog's n_tokens).
        "n_tokens": n_tokens,
        "n_doc_tokens": n_tokens,
        "n_text_tokens": n_tokens - n_docs * (1 + int(task.cfg.add_bos)),
        "n_eval_docs": len(held),
        **stats,
        **dict(task.meta),
    }
    shardio.atomic_write_json(out_dir / "meta.json", meta)
    outputs = [f"{task.group}/{name}" for name in _files(n_docs)]
    ledger.write_marker(marker_dir, task.group,
                        Marker.new(task.input_fingerprint, task.config_hash, outputs, stage="pack", meta=meta),
                        also=[Path(task.eval_path)] if task.eval_path else [])
    return {**meta, "rebuilt": rebuilt} if rebuilt else meta


def _files(n_docs: int) -> tuple[str, ...]:
    # A group with no documents has meta.json only (see pack_group).
    return (DATA_FILES if n_docs else ()) + ("meta.json",)


def _damage(task: GroupTask, marker: Marker) -> str | None:
    """What is wrong with the files of a group whose marker matches (None: all as written)."""
    marker_dir = Path(task.out_dir).parent
    wanted = [f"{task.group}/{name}" for name in _files(marker.extra.get("meta", {}).get("n_docs"))]
    wanted += [os.path.relpath(task.eval_path, marker_dir)] if task.eval_path else []
    unrecorded = [w for w in wanted if w not in (marker.files or {})]
    if unrecorded:  # a marker from before pack markers recorded their files: nothing vouches for them
        return f"{marker_dir.name}/{ledger.DONE}/{task.group}.json records no digest of {unrecorded[0]}"
    return ledger.damage(marker_dir, marker)
