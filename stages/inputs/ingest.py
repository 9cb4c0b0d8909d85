"""Ingest: raw files -> normalized document shards, plus quarantine records for what can't be read.

`run_ingest` runs one task of the plan (stages/inputs/plan.py), writing its document parts
(rolled every `shard_docs` documents) and its quarantine file atomically, and its marker last;
`outcome` reads the markers to fail a run that kept nothing. The input and config types
(stages/inputs/config.py) and the planning functions are importable from here too: this module
is the stage's entry point.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from curate.records.marker import Marker
from curate.stages import ledger, shardio
from curate.stages.inputs import hf_input
from curate.stages.base import INGEST_SCHEMA, QUARANTINE_SCHEMA
from curate.stages.inputs.config import FieldMap, IngestConfig, InputSpec
from curate.stages.inputs.plan import IngestTask, default_source, plan_tasks, task_bytes, task_fingerprint
from curate.stages.inputs.jsonl_reader import read_jsonl
from curate.stages.inputs.readers import read_html_files, read_parquet, read_text_files
from curate.stages.inputs.document import Rejected, to_document
from curate.stages.inputs.warc import read_warc

__all__ = ["FieldMap", "IngestConfig", "IngestJob", "IngestTask", "InputSpec", "STAGE_VERSION", "config_hash",
           "default_source", "outcome", "plan_tasks", "run_ingest", "task_bytes", "task_fingerprint"]

# 2: `meta`, `input_path` and `input_line` columns; BOM, lone-CR and duplicate-key handling.
# 3: HTML, WARC and Arrow inputs; a binary file named .jsonl is one `binary_file` record.
STAGE_VERSION = 3


def config_hash(cfg: IngestConfig) -> str:
    return shardio.stable_hash({"stage": "ingest", "version": STAGE_VERSION, "config": asdict(cfg)})


@dataclass(frozen=True)
class IngestJob:
    """Everything one ingest task needs; picklable, so it can run on any Ray worker."""

    task: IngestTask
    cfg: IngestConfig
    out_dir: str
    quarantine_dir: str
    fingerprint: str
    config_hash: str


def _items(task: IngestTask, cfg: IngestConfig):
    r, f = task.read, task.fields
    page_bytes = int(cfg.max_page_mb * 1e6)
    if r.format == "jsonl":
        return read_jsonl(r, f.text)
    if r.format == "parquet":
        return read_parquet(r)
    if r.format == "arrow":
        return hf_input.read_arrow(r)
    if r.format == "html":
        return read_html_files(r, page_bytes)
    if r.format == "warc":
        return read_warc(r, page_bytes)
    return read_text_files(r)


def run_ingest(job: IngestJob) -> dict:
    """Run one ingest task; returns its marker (also written to `out_dir/_done/`)."""
    t0 = time.perf_counter()
    task, cfg = job.task, job.cfg
    out_dir = Path(job.out_dir)
    counts = {"in": 0, "kept": 0, "rejected": 0, "quarantined": 0, "rejected_by_reason": {},
              "quarantined_by_reason": {}, "invalid_utf8_replaced": 0, "control_chars_removed": 0}
    quarantine: list[dict] = []
    columns: dict[str, list] = {name: [] for name in INGEST_SCHEMA.names}
    outputs: list[str] = []
    bytes_out = 0

    def flush() -> None:
        nonlocal bytes_out
        name = f"{task.task}-{len(outputs):03d}.parquet"
        table = pa.table({f.name: pa.array(columns[f.name], f.type) for f in INGEST_SCHEMA}, schema=INGEST_SCHEMA)
        bytes_out += shardio.write_parquet(out_dir / name, table)
        outputs.append(name)
        for values in columns.values():
            values.clear()

    for item in _items(task, cfg):
        if cfg.limit is not None and counts["in"] >= cfg.limit:
            break
        counts["in"] += 1
        counts["invalid_utf8_replaced"] += item.replaced
        reason, detail = item.reason, item.detail
        if reason is None:
            try:
                doc, replaced, removed = to_document(item.record, task.fields, task.source, cfg.max_chars)
                counts["invalid_utf8_replaced"] += replaced
                counts["control_chars_removed"] += removed
                doc["input_path"], doc["input_line"] = item.path or task.read.path, item.line
                for name, values in columns.items():
                    values.append(doc[name])
                counts["kept"] += 1
                if len(columns["id"]) >= cfg.shard_docs:
                    flush()
                continue
            except Rejected as e:
                reason, detail = e.reason, e.detail
        quarantine.append({"path": item.path or task.read.path, "line": item.line, "offset": item.offset,
                           "reason": reason, "detail": (detail or "")[:500]})
        counts["quarantined"] += 1
        by = counts["quarantined_by_reason"]
        by[reason] = by.get(reason, 0) + 1
    if columns["id"] or not outputs:
        flush()
    q_path = Path(job.quarantine_dir) / f"{task.task}.parquet"
    shardio.write_parquet(q_path, pa.Table.from_pylist(quarantine, schema=QUARANTINE_SCHEMA))
    # A previous run of this task may have rolled more parts than this one: remove the extras.
    for old in out_dir.glob(f"{task.task}-*.parquet"):
        if old.name not in outputs:
            old.unlink()
    marker = Marker.new(job.fingerprint, job.config_hash, outputs, counts, stage="ingest", bytes_out=bytes_out,
                        bytes_in=task_bytes(task), seconds=round(time.perf_counter() - t0, 3), input=task.read.path)
    return ledger.write_marker(out_dir, task.task, marker, also=[q_path]).to_dict()


def outcome(stage_dir: Path, tasks: list[IngestTask], inputs: list[InputSpec], run: str) -> tuple[str | None, list[str]]:
    """(why the run is a failure, warnings) from the ingest markers: inputs that yield no kept
    document at all fail the run, since a silent empty corpus is found only when training on it;
    an input with most of its records quarantined is warned about with its top reason, and an
    optional input that was not there is named."""
    planned = {t.input for t in tasks}
    absent = [f"warning: inputs[{i}] ({spec.path}): not there or no files in it, left out (optional: true)"
              for i, spec in enumerate(inputs) if spec.optional and i not in planned]
    per: dict[int, dict] = {}
    for t in tasks:
        c = (shardio.read_marker(stage_dir, t.task) or {}).get("counts", {})
        agg = per.setdefault(t.input, {"in": 0, "kept": 0, "quarantined": 0, "by": {}})
        for k in ("in", "kept", "quarantined"):
            agg[k] += c.get(k, 0)
        for reason, n in c.get("quarantined_by_reason", {}).items():
            agg["by"][reason] = agg["by"].get(reason, 0) + n

    def top(by: dict) -> str:
        reason, n = max(by.items(), key=lambda kv: (kv[1], kv[0]))
        return f"{reason} ({n}); see: curate query {run} \"SELECT path, line, detail FROM quarantine WHERE reason = '{reason}'\""

    warnings = [f"warning: inputs[{i}] ({inputs[i].path}): {a['quarantined']} of {a['in']} records quarantined, "
                f"most for {top(a['by'])}" for i, a in sorted(per.items()) if a["by"] and 2 * a["quarantined"] > a["in"]]
    total = {k: sum(a[k] for a in per.values()) for k in ("in", "kept")}
    if total["kept"]:
        return None, absent + warnings
    if not total["in"]:
        return "no documents: the inputs hold no records", absent
    by: dict[str, int] = {}
    for a in per.values():
        for reason, n in a["by"].items():
            by[reason] = by.get(reason, 0) + n
    why = f"; the top reason is {top(by)}" if by else ""
    return f"no documents kept: {total['in']} records read from the inputs, none kept{why}", absent
