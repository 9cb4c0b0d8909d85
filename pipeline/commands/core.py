"""Core commands: `corpus`, `run`, `query`, `stats`. Each is a plain typed function; `register`
adds its thin CLI wrapper."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa

from curate.pipeline.errors import CurateError


def corpus_system(out: str, max_mb: float = 16.0) -> dict[str, int]:
    from curate.pipeline.commands.corpus import build_system_corpus

    return build_system_corpus(out, max_mb)


def corpus_kernel_html(out: str, pages: int = 20) -> int:
    """Copy `pages` pages of the kernel's HTML documentation into the folder `out` where linux-doc
    is installed; says what it did, or that it skipped them."""
    from curate.pipeline.commands.corpus import KERNEL_DOCS, build_kernel_html

    n, root = build_kernel_html(out, pages)
    if root is None:
        print(f"no kernel HTML documentation here ({KERNEL_DOCS}; Debian: apt-get install linux-doc-6.1): "
              f"no pages written to {out}, skipped")
    else:
        print(f"wrote {n} HTML pages of {root} to {out}")
    return 0


def run(config: str, inputs: list[str] | None = None, out: str | None = None, workers: int | None = None,
        address: str | None = None, limit: int | None = None, executor: str = "auto",
        stage_dir: str | None = None, sync_s: float | None = None, then=None) -> Path:
    """Run a config; returns the run directory (for an `s3://` one, its local staging directory).
    `limit`: only the first N records of each input; `executor`: `auto` (default: chosen from the
    input's size), `ray` or `local` (every stage in this process, same output). `stage_dir`,
    `sync_s`: where an `s3://` run works and how often it is pushed (pipeline/running/remote.py);
    `then(run_dir)` runs after the stages, while the run is still held (and pushed after it)."""
    import dataclasses

    from curate.pipeline.running import remote
    from curate.pipeline.running.config import load_config
    from curate.pipeline.errors import ConfigError
    from curate.pipeline.running.runner import run_pipeline

    cfg = load_config(config, inputs=inputs, out=out, workers=workers, address=address)
    if limit is not None:
        try:
            cfg.ingest = dataclasses.replace(cfg.ingest, limit=limit)
        except ValueError as e:
            raise ConfigError("--limit", str(e)) from None
    if not remote.is_remote(cfg.out):
        run_pipeline(cfg, executor=executor)
        if then:
            then(Path(cfg.out))
        return Path(cfg.out)
    with remote.staged(cfg.out, stage_dir, sync_s=sync_s or remote.SYNC_S) as local:
        run_pipeline(dataclasses.replace(cfg, out=str(local)), executor=executor)  # binds model paths there
        if then:
            then(local)
    return local


def format_table(t: pa.Table, max_width: int = 60, max_rows: int = 200) -> str:
    names = t.column_names
    rows = [[_cell(v, max_width) for v in r.values()] for r in t.slice(0, max_rows).to_pylist()]
    widths = [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(names)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    out = [line(names), line(["-" * w for w in widths])] + [line(r) for r in rows]
    if t.num_rows > max_rows:
        out.append(f"... {t.num_rows - max_rows} more rows (use --format csv/json/parquet for all)")
    out.append(f"({t.num_rows} rows)")
    return "\n".join(out)


def _cell(v, width: int) -> str:
    s = "NULL" if v is None else (f"{v:.6g}" if isinstance(v, float) else str(v))
    s = s.replace("\n", "\\n")
    return s if len(s) <= width else s[: width - 1] + "…"


def query(run_dir: str, sql: str, fmt: str = "table", output: str | None = None,
          timeout_s: float | None = 600.0) -> pa.Table:
    """Run one read statement over the run's catalog and write it as `fmt` (table, csv, json lines,
    parquet: pipeline/catalog/results.py gets every DuckDB type through). Past `timeout_s` the
    statement is cancelled; a damaged run is one error naming the file."""
    from curate.pipeline.catalog import damage, results
    from curate.pipeline.catalog import db as catalog

    if fmt not in ("table", "csv", "json", "parquet"):
        raise CurateError(f"--format must be table, csv, json or parquet, not {fmt!r}")
    run_dir = _readable(run_dir)
    table = damage.guarded(Path(run_dir), catalog.query, run_dir, sql, timeout_s=timeout_s or None)
    if fmt == "table":
        _emit(format_table(table) + "\n", output)
    elif fmt == "json":
        rows, _ = results.json_rows(table)
        _emit("".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n" for r in rows), output)
    else:
        _emit(results.encode(table, fmt), output)
    return table


def _emit(data: str | bytes, output: str | None) -> None:
    if output:
        Path(output).write_bytes(data.encode() if isinstance(data, str) else data)
    elif isinstance(data, bytes):
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        sys.stdout.write(data)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("corpus", help="build a raw JSONL corpus from real text on this machine")
    p.add_argument("kind", choices=["system", "kernel-html"], help="`system`: stdlib sources, pydoc topics, "
                   "/usr/share/doc, licences, man pages; `kernel-html`: pages of the kernel's HTML documentation")
    p.add_argument("out", help="output JSONL path (kernel-html: a folder)")
    p.add_argument("--max-mb", type=float, default=16.0, help="size cap in MB (default 16: a few minutes of demo)")
    p.add_argument("--pages", type=int, default=20, help="kernel-html: pages to copy (default 20)")
    p.set_defaults(func=lambda a: corpus_kernel_html(a.out, a.pages) if a.kind == "kernel-html"
                   else _print_counts(corpus_system(a.out, a.max_mb), a.out))

    p = sub.add_parser("run", help="run a pipeline config: ingest -> stages -> shards")
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--input", action="append", dest="inputs", metavar="PATH", help="replace the config's inputs (repeatable)")
    p.add_argument("--out", help="replace the config's run directory")
    p.add_argument("--workers", type=int, help="parallel workers (default: the Ray cluster's CPUs)")
    p.add_argument("--address", help="Ray address to attach to (default: RAY_ADDRESS, else an embedded local Ray)")
    p.add_argument("--limit", type=int, metavar="N", help="quick trial: only the first N records of each input file")
    p.add_argument("--executor", choices=["auto", "ray", "local"], default="auto",
                   help="where stages run: auto (default: this process for a small input, Ray for a big one or "
                        "when an address is given), ray, or local (this process, no Ray; same output)")
    p.add_argument("--stage-dir", metavar="DIR", help="for an s3:// run directory: the local directory the run "
                   "works in (default: $XDG_CACHE_HOME/curate/runs/<digest of the URL>)")
    p.add_argument("--sync-s", type=float, metavar="S", help="for an s3:// run directory: seconds between "
                   "pushes to the bucket (default 5)")
    p.set_defaults(func=_cli_run)

    p = sub.add_parser("query", help="SQL over a run's catalog (views docs, <stage>, rejected, quarantine, shards)")
    p.add_argument("run_dir")
    p.add_argument("sql", help="one read statement: SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN")
    p.add_argument("--format", default="table", choices=["table", "csv", "json", "parquet"])
    p.add_argument("--output", "-o", help="write to this file instead of stdout")
    p.add_argument("--timeout-s", type=float, default=600.0,
                   help="cancel the statement after this many seconds (default 600; 0: no limit)")
    p.set_defaults(func=_cli_query)

    p = sub.add_parser("stats", help="documents, characters, per source, drops per reason")
    p.add_argument("run_dir")
    p.add_argument("--json", action="store_true", help="the same figures as one JSON object")
    p.set_defaults(func=lambda a: print(stats_json(a.run_dir) if a.json else stats_text(a.run_dir)) or 0)

    p = sub.add_parser("report", help="write RUN_DIR/report.html: counts and plots of the run")
    p.add_argument("run_dir")
    p.set_defaults(func=lambda a: print(f"wrote {report(a.run_dir)}") or 0)


def _cli_query(a: argparse.Namespace) -> int:
    query(a.run_dir, a.sql, a.format, a.output, a.timeout_s)
    return 0


def _print_counts(counts: dict[str, int], out: str) -> int:
    total = sum(counts.values())
    print(f"wrote {total} documents to {out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


def _cli_run(a: argparse.Namespace) -> int:
    def show(run_dir: Path) -> None:
        print()
        print(stats_text(str(run_dir)))
        print(f"report: {report(str(run_dir))}")

    run(a.config, a.inputs, a.out, a.workers, a.address, a.limit, a.executor, a.stage_dir, a.sync_s, then=show)
    return 0


def report(run_dir: str) -> Path:
    """Write `RUN_DIR/report.html` (counts and plots); returns its path."""
    from curate.pipeline.reporting.report import write_report

    return write_report(run_dir)


def stats_text(run_dir: str) -> str:
    from curate.pipeline.reporting.stats import summary_lines

    return "\n".join(summary_lines(_readable(run_dir)))


def stats_json(run_dir: str) -> str:
    from curate.pipeline.reporting.stats import summary

    return json.dumps(summary(_readable(run_dir)), indent=2, default=str)


def _readable(run_dir: str) -> str:
    """The run directory the catalog reads: itself, or for an `s3://` run a local copy brought up
    to date with the bucket (pipeline/running/remote.py)."""
    from curate.pipeline.running import remote

    return str(remote.view_copy(run_dir)) if remote.is_remote(str(run_dir)) else run_dir
