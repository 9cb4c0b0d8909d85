"""Stage `decontaminate`: drop, cut or flag documents that share word n-grams with evaluation sets.

The method is GPT-3's (Brown et al. 2020, https://arxiv.org/abs/2005.14165, appendix C):
- **N per set.** Each set's N is the 5th percentile of its items' lengths in words, at least 8
  and at most 13 (`gpt3_n`), unless the config gives `n`. GPT-3 used that N for its overlap
  analysis and filtered the training data with 13-grams; here it filters too, so an item shorter
  than 13 words can still be found. An item's length is the words of its longest string, since
  n-grams never straddle two fields (question, answer, choices); GPT-3 measured whole examples.
- **Frequent n-grams ignored.** An eval n-gram found in more than `max_doc_frequency` documents
  (10, GPT-3's figure) is ignored: GPT-3 found such 13-grams to be "common cultural phrases, legal
  boilerplate, or similar content". The count is over the stage's input, so the stage is global:
  a first pass matches every shard (`scan`) and a second decides them (`apply`). Ignored n-grams
  are reported with the number of documents holding them.
- **What a match does** (`mode`). `span` is GPT-3's filter: the matched n-gram and 200
  characters each side are cut out, pieces under 200 characters go too, and a document split
  into more than 10 pieces is dropped. GPT-3 kept the pieces as separate documents; a stage keeps
  one row per document, so here the pieces stay one document, joined by a blank line. `drop`
  (the default) rejects the whole document, as GPT-3 first did and lm-eval-harness's
  decontamination does: safest for an evaluation, at the price of long documents lost to one
  quote. `flag` keeps everything and lists the sets.
Llama 2 (Touvron et al. 2023, appendix A.6) and Dolma/OLMo (Soldaini et al. 2024) measure or
remove contamination otherwise (token-level overlap with a skip-gram budget; paragraph Bloom
filters); neither is built here.

Both sides are normalised the same way (`word_ngrams`): NFKC, lower case, words = runs of
Unicode letters and digits, then every window of N consecutive words hashed to a 64-bit integer.
An evaluation item is one record of a set; every string in it (question, answer, choices, ...)
gives its own n-grams. A text of fewer than N words has no n-gram: an item made only of such
texts cannot be found (`EvalIndex.items_without_ngrams` counts them per set, and the report
shows them).

The eval-side index (`EvalIndex`) is built once per worker from the set files: one sorted uint64
array of n-gram hashes and, beside it, the int32 number of the item each comes from (12 bytes per
(n-gram, item) pair), plus a bitmap over the hashes' top bits (2-4 bytes per n-gram): 14-16 MB
per million eval n-grams. Document n-grams are tested against the bitmap, and the few that pass
are looked up with `searchsorted`.

The first pass saves each shard's matches under `<stage>/_work/` (keyed by the shard's digest and
the sets), so a rerun or a resumed run matches only new shards; a shard's marker records the
ignored n-grams it holds, so a change in what is frequent redoes exactly the shards it touches.
The stats (`curate stats`, `pipeline/reporting/breadth_summary.py`) list per set its N, the items
matched, with the documents, and the frequent n-grams ignored.
"""

from __future__ import annotations

import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.stages.base import (COLUMNS, DROPPED_ROWS, FULL_SHARDS, GLOBAL, Declares, GlobalContext, StageOutput,
                                 add_columns, split_by_reason)
from curate.stages.heldout.eval_index import EvalIndex, EvalSetSpec, Hits, _distinct_counts, cut, matched_spans
from curate.stages.docshard import TEXT, base_ref, document_schema, iter_docs, read_docs, write_delta
from curate.records.marker import Marker
from curate.stages import ledger
from curate.stages.shardio import atomic_write_bytes, file_digest, stable_hash, write_parquet

MATCHES = "decontaminate_matches"
IGNORED = "decontaminate_ignored"
SETS = "decontaminate_sets"
COLUMN = "contaminated_sets"
SCAN_VERSION = 1  # of the saved matches; raised when what they hold changes
BATCH_ROWS = 4096  # documents hashed at once (the runner's batch for map stages)


# ------------------------------------------------------------------------------------ the stage
@dataclass
class DecontaminateConfig:
    """Config of the `decontaminate` stage."""

    sets: list[EvalSetSpec] = field(default_factory=list)
    """Evaluation sets, each `{name, path, fields, n}` (see EvalSetSpec)."""
    n: int | None = None
    """Words per n-gram for every set without its own `n`; null: GPT-3's rule per set, the 5th
    percentile of its items' lengths in words, clamped to [8, 13] (`gpt3_n`)."""
    mode: Literal["drop", "span", "flag"] = "drop"
    """`drop`: reject matching documents with reason `contaminated:<set>` (the first set, in
    config order, that matched); `span`: cut the matched n-grams out with `margin_chars` around
    them (GPT-3), dropping a document left empty or split into more than `max_splits` pieces;
    `flag`: keep them and list the sets in `contaminated_sets`."""
    max_doc_frequency: float | None = 10
    """An eval n-gram found in more than this many documents of the stage's input is ignored and
    reported (licence lines, standard headers; GPT-3 ignored 13-grams in more than 10 training
    documents); below 1: a fraction of the documents; null: none ignored."""
    min_ngrams: int = 1
    """A document matches a set when it shares at least this many distinct n-grams with it."""
    margin_chars: int = 200
    """`span` mode: characters removed each side of a matched n-gram (GPT-3: 200)."""
    min_piece_chars: int = 200
    """`span` mode: pieces left between cuts shorter than this are removed too (GPT-3: 200)."""
    max_splits: int = 10
    """`span` mode: a document cut into more pieces than this is dropped (GPT-3: 10)."""
    max_listed_matches: int = 10000
    """At most this many (set, item, document) matches listed per batch in the stats (the rest
    are counted as `matches_not_listed`)."""
    sets_stamp: str | None = None
    """Content digest of the set files, filled in at load (part of the config hash, so a changed
    eval set reruns the stage)."""

    def __post_init__(self):
        if not self.sets:
            raise ValueError("sets: give at least one evaluation set {name, path}")
        names = [s.name for s in self.sets]
        if len(set(names)) != len(names):
            raise ValueError(f"sets: set names must be unique, got {names}")
        if self.n is not None and self.n < 1:
            raise ValueError(f"n: words per n-gram must be >= 1 or null, got {self.n}")
        if self.mode not in ("drop", "span", "flag"):
            raise ValueError(f"mode: {self.mode!r}; valid: drop, span, flag")
        if self.max_doc_frequency is not None and not self.max_doc_frequency > 0:
            raise ValueError(f"max_doc_frequency: a count of documents (>= 1), a fraction (< 1) or null, "
                             f"got {self.max_doc_frequency}")
        for name in ("min_ngrams", "max_splits"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("margin_chars", "min_piece_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        try:
            self.sets_stamp = stable_hash([[str(f), file_digest(f)] for s in self.sets for f in s.files()])
        except FileNotFoundError:
            self.sets_stamp = None  # checked again, with the error, when the stage starts

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [COLUMN] if self.mode in ("flag", "span") else []

    def frequency_limit(self, documents: int) -> float:
        """Documents an eval n-gram may be in before it is ignored."""
        f = self.max_doc_frequency
        return float("inf") if f is None else f * documents if f < 1 else f

    def scan_key(self) -> str:
        """What a shard's matches depend on besides the shard: the sets, their N and contents."""
        return stable_hash({"sets": [vars(s) for s in self.sets], "n": self.n, "stamp": self.sets_stamp,
                            "version": SCAN_VERSION})


def _matched_sets(index: EvalIndex, hits: Hits, min_ngrams: int) -> dict[int, list[int]]:
    """Per document row, the sets it shares at least `min_ngrams` distinct n-grams with."""
    d_s, n_s = _distinct_counts(hits.doc, index.item_set[hits.item].astype(np.int64), hits.hash)
    found: dict[int, list[int]] = {}
    for (d, s), k in zip(d_s.tolist(), n_s.tolist()):
        if k >= min_ngrams:
            found.setdefault(d, []).append(s)
    return found


def _counters(index: EvalIndex, hits: Hits, found: dict[int, list[int]], ids: list[str],
              ignored: dict[int, list[tuple[str, str]]], max_listed: int) -> dict[str, Any]:
    """The stats of one batch: matches listed per (set, item, document), documents per set, the
    ignored n-grams with the documents of the batch holding them, and each set's N."""
    counters: dict[str, Any] = {"ngrams_checked": hits.checked, "matches_not_listed": 0}
    listed: dict[str, int] = {}
    d_i, n_i = _distinct_counts(hits.doc, hits.item.astype(np.int64), hits.hash)
    for (d, it), k in zip(d_i.tolist(), n_i.tolist()):
        s = int(index.item_set[it])
        if s not in found.get(d, []):
            continue
        if len(listed) < max_listed:
            listed[json.dumps([index.set_names[s], index.item_keys[it], ids[d]])] = k
        else:
            counters["matches_not_listed"] += 1
    counters[MATCHES] = listed
    counters.update({f"contaminated:{s}": 0 for s in index.set_names})  # every set shows in the stats
    for sets in found.values():
        for s in sets:
            counters[f"contaminated:{index.set_names[s]}"] += 1
    counters[SETS] = {json.dumps([s, index.n_of_set[s], index.items_total[s], index.items_without_ngrams[s]]): 1
                      for s in index.set_names}
    return counters


def _ignored_counter(hits: Hits, ignored: dict[int, list[tuple[str, str]]]) -> dict[str, int]:
    """JSON [set, n-gram words] -> documents of the batch holding that ignored n-gram."""
    freq_h, freq_docs = hits.doc_frequency()
    return {json.dumps(label): int(k) for h, k in zip(freq_h.tolist(), freq_docs.tolist())
            for label in ignored.get(h, [])}


def decontaminate(index: EvalIndex, cfg: DecontaminateConfig, stage: str, table: pa.Table, hits: Hits,
                  ignored: dict[int, list[tuple[str, str]]]) -> StageOutput:
    """Apply `cfg.mode` to `table` (rows numbered as `hits.doc`), given its matches and the eval
    n-grams to ignore (hash -> (set, words), from the corpus frequency). `text` is needed in
    `span` mode only."""
    skip = np.isin(hits.hash, np.fromiter(ignored, np.uint64, count=len(ignored)))
    counted = Hits(hits.doc[~skip], hits.hash[~skip], hits.item[~skip], hits.checked)
    found = _matched_sets(index, counted, cfg.min_ngrams)
    ids = table.column("id").to_pylist()
    counters = _counters(index, counted, found, ids, ignored, cfg.max_listed_matches)
    counters[IGNORED] = _ignored_counter(hits, ignored)
    names = [[index.set_names[s] for s in sorted(found.get(d, []))] for d in range(table.num_rows)]
    reasons: list[str | None] = [None] * table.num_rows
    if cfg.mode == "drop":
        reasons = [f"contaminated:{n[0]}" if n else None for n in names]
    elif cfg.mode == "span" and found:
        table, reasons = _cut_spans(index, cfg, table, found, set(ignored), counters)
    if cfg.mode in ("flag", "span"):
        table = add_columns(table, stage, {COLUMN: pa.array(names, pa.list_(pa.string()))})
    return split_by_reason(table, stage, reasons, counters)


def _cut_spans(index: EvalIndex, cfg: DecontaminateConfig, table: pa.Table, found: dict[int, list[int]],
               ignored: set[int], counters: dict[str, Any]) -> tuple[pa.Table, list[str | None]]:
    texts = table.column(TEXT).to_pylist()
    reasons: list[str | None] = [None] * table.num_rows
    counters.update({"span_documents_cut": 0, "span_chars_removed": 0, "span_documents_dropped": 0})
    for d, sets in found.items():
        spans = matched_spans(texts[d], index, ignored, set(sets))
        new = cut(texts[d], spans, cfg.margin_chars, cfg.min_piece_chars, cfg.max_splits) if spans else None
        if new is None:  # too many pieces, nothing left, or no span found again: drop it whole
            reasons[d] = f"contaminated:{index.set_names[min(sets)]}"
            counters["span_documents_dropped"] += 1
            continue
        counters["span_documents_cut"] += 1
        counters["span_chars_removed"] += len(texts[d]) - len(new)
        texts[d] = new
    i = table.schema.get_field_index(TEXT)
    new_text = pa.array(texts, table.schema.field(i).type)
    table = table.set_column(i, table.schema.field(i), new_text)
    if "n_chars" in table.column_names:
        j = table.schema.get_field_index("n_chars")
        table = table.set_column(j, table.schema.field(j), pc.cast(pc.utf8_length(new_text), pa.int64()))
    return table, reasons


def frequent(cfg: DecontaminateConfig, freq: list[tuple[np.ndarray, np.ndarray]], documents: int) -> np.ndarray:
    """Eval n-gram hashes in more documents than `cfg.max_doc_frequency` allows, given each
    shard's (hashes, documents holding them)."""
    if not freq or cfg.max_doc_frequency is None:
        return np.empty(0, np.uint64)
    h = np.concatenate([f[0] for f in freq])
    c = np.concatenate([f[1] for f in freq])
    uniq, inv = np.unique(h, return_inverse=True)
    total = np.bincount(inv, weights=c, minlength=len(uniq))
    return uniq[total > cfg.frequency_limit(documents)]


class DecontaminateStage:
    """Drops, cuts or flags documents sharing n-grams with the configured evaluation sets.

    A global stage: whether an eval n-gram is ignored depends on how many documents of the whole
    input hold it, so every shard is matched (`scan`) before any is decided (`apply`)."""

    # full shards in span mode (the cut text is the later stages' base), else a delta
    declares = Declares(step=GLOBAL, writes=frozenset({COLUMNS, DROPPED_ROWS, FULL_SHARDS}))
    version = 2  # 2: N per set, frequent n-grams ignored, span mode (1 dropped on any 13-gram)

    def __init__(self, config: DecontaminateConfig, name: str = "decontaminate"):
        self.config = config
        self.name = name
        self.index: EvalIndex | None = None

    def setup(self) -> None:
        self.index = EvalIndex(self.config.sets, self.config.n)

    def process(self, table: pa.Table) -> StageOutput:
        """Decontaminate one in-memory table on its own: n-gram frequencies are counted in it."""
        if self.index is None:
            self.setup()
        hits = Hits.find(self.index, table.column(TEXT))
        h, docs = hits.doc_frequency()
        ignored = frequent(self.config, [(h, docs)], table.num_rows)
        return decontaminate(self.index, self.config, self.name, table, hits, self.index.describe(ignored))

    def run(self, inputs: list, ctx: GlobalContext) -> None:
        cfg, inputs = self.config, [Path(p) for p in inputs]
        key, work = cfg.scan_key(), Path(ctx.work_dir)
        digests = [file_digest(p) for p in inputs]
        scans = [ScanTask(str(p), str(work / f"{p.stem}.npz"), stable_hash([d, key])) for p, d in zip(inputs, digests)]
        todo = [t for t in scans if _read_scan(t) is None]
        size = lambda t: os.path.getsize(t.path)  # noqa: E731
        if todo:
            ctx.executor.map_actors(_Worker(cfg, self.name), "scan", todo, desc=f"{self.name}: match",
                                    cost=size, size=size)
        found = [_read_scan(t) for t in scans]
        if any(f is None for f in found):
            raise RuntimeError(f"stage {self.name}: a shard's matches were not written ({work})")
        ignored = frequent(cfg, [(f["freq_hash"], f["freq_docs"]) for f in found], sum(int(f["docs"]) for f in found))
        labels = EvalIndex(cfg.sets, cfg.n).describe(ignored) if len(ignored) else {}
        tasks = []
        stage_dir = Path(ctx.stage_dir)
        for p, d, scan, f in zip(inputs, digests, scans, found):
            mine = np.intersect1d(ignored, f["freq_hash"])
            fp = stable_hash([d, key, mine.tolist(), self.version])
            if ledger.current(stage_dir, p.stem, fp, ctx.config_hash) is None:
                tasks.append(ApplyTask(scan, str(stage_dir), str(ctx.rejected_dir), {h: labels[h] for h in
                                       mine.tolist()}, d, fp, ctx.config_hash))
        stage_dir.mkdir(parents=True, exist_ok=True)
        Path(ctx.rejected_dir).mkdir(parents=True, exist_ok=True)
        if tasks:
            ctx.executor.map_actors(_Worker(cfg, self.name), "apply", tasks, desc=f"{self.name}: apply",
                                    cost=lambda t: size(t.scan), size=lambda t: size(t.scan))


# ------------------------------------------------------------------- the two passes of a run
@dataclass(frozen=True)
class ScanTask:
    path: str
    """The input shard."""
    out: str
    """Its matches: an .npz under the stage's work folder."""
    key: str
    """The shard's digest and the config's `scan_key`: a file of another key is stale."""


@dataclass(frozen=True)
class ApplyTask:
    scan: ScanTask
    stage_dir: str
    rejected_dir: str
    ignored: dict
    """Ignored n-grams found in this shard: hash -> [(set, words)]."""
    digest: str
    """The input shard's content digest."""
    fingerprint: str
    config_hash: str


def _read_scan(task: ScanTask) -> dict | None:
    try:
        with np.load(task.out) as f:
            return dict(f) if str(f["key"]) == task.key else None
    except (OSError, KeyError, ValueError, EOFError):  # absent, or cut short by a killed run
        return None


class _Worker:
    """Built once per worker (`make()` of `Executor.map_actors`): the eval index loads once."""

    def __init__(self, config: DecontaminateConfig, name: str):
        self.config, self.name = config, name
        self.stage: DecontaminateStage | None = None

    def __call__(self) -> "_Worker":
        self.stage = DecontaminateStage(self.config, self.name)
        self.stage.setup()
        return self

    def scan(self, task: ScanTask) -> None:
        """Match one shard and save its matches and n-gram document counts."""
        parts, rows = [], 0
        for table in iter_docs(task.path, BATCH_ROWS, columns=[TEXT]):
            parts.append(Hits.find(self.stage.index, table.column(TEXT), rows))
            rows += table.num_rows
        hits = Hits.of([p.doc for p in parts], [p.hash for p in parts], [p.item for p in parts],
                       sum(p.checked for p in parts))
        freq_hash, freq_docs = hits.doc_frequency()
        buf = io.BytesIO()
        np.savez(buf, key=np.array(task.key), docs=np.int64(rows), checked=np.int64(hits.checked), doc=hits.doc,
                 hash=hits.hash, item=hits.item, freq_hash=freq_hash, freq_docs=freq_docs)
        atomic_write_bytes(Path(task.out), buf.getvalue())

    def apply(self, task: ApplyTask) -> dict:
        """Decide one shard from its saved matches; write its kept documents (a delta shard, or a
        full one in `span` mode, whose text changed), rejected rows and marker."""
        t0, cfg, path = time.time(), self.config, Path(task.scan.path)
        f = _read_scan(task.scan)
        if f is None:
            raise RuntimeError(f"stage {self.name}: the matches of {path.name} ({task.scan.out}) are gone or stale")
        hits = Hits(f["doc"], f["hash"], f["item"], int(f["checked"]))
        schema = document_schema(path)
        span = cfg.mode == "span"
        docs = read_docs(path) if span else read_docs(path, [c for c in schema.names if c != TEXT], with_row=True)
        out = decontaminate(self.stage.index, cfg, self.name, docs, hits, task.ignored)
        stage_dir, rejected = Path(task.stage_dir), Path(task.rejected_dir) / f"{path.stem}.parquet"
        target = stage_dir / f"{path.stem}.parquet"
        written = (write_parquet(target, out.kept) if span
                   else write_delta(target, base_ref(path, task.digest), schema, out.kept))
        write_parquet(rejected, out.rejected)
        reasons: dict[str, int] = {}
        for r in out.rejected.column("reason").to_pylist():
            reasons[r] = reasons.get(r, 0) + 1
        counts = {"in": docs.num_rows, "kept": out.kept.num_rows, "rejected": out.rejected.num_rows,
                  "quarantined": 0, "rejected_by_reason": reasons, "quarantined_by_reason": {}, **out.counters}
        marker = Marker.new(task.fingerprint, task.config_hash, [target.name], counts, stage=self.name,
                            bytes_in=path.stat().st_size, bytes_out=written, seconds=round(time.time() - t0, 3),
                            input=str(path))
        return ledger.write_marker(stage_dir, path.stem, marker, also=[rejected]).to_dict()
