"""Run-directory integrity: damaged shards are found and rebuilt, old markers are redone, a full
disk leaves no temporaries and one error line, and output files follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pyarrow as pa
import pytest

from curate.pipeline.catalog.db import query
from curate.pipeline.running.config import load_config
from curate.pipeline.errors import CurateError
from curate.pipeline.running.runner import run_pipeline
from curate.records.marker import Marker
from curate.stages import ledger, shardio

REPO = Path(__file__).resolve().parents[1]
STAGES = [{"kind": "langid"}, {"kind": "exact_dedup"}]


def stdlib_corpus(out: Path, packages=("json", "email", "urllib")) -> Path:
    """JSONL of real text that every machine with this Python has: the sources of a few standard
    library packages, pydoc's topics, and a copy of the first 20 of them (so dedup has work)."""
    from pydoc_data.topics import topics

    lib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace") for pkg in packages
             for p in sorted((lib / pkg).glob("*.py"))]
    texts += [topics[k] for k in sorted(topics)]
    texts += texts[:20]
    with open(out, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t, "source": "stdlib"}) + "\n")
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return stdlib_corpus(tmp_path_factory.mktemp("integrity") / "stdlib.jsonl")


def _cfg(corpus: Path, out: Path, stages=STAGES) -> dict:
    return {"name": "i", "out": str(out), "inputs": [{"path": str(corpus)}],
            "ingest": {"shard_docs": 40, "split_mb": 0.3}, "stages": stages}


def _docs(run_dir: Path) -> pa.Table:
    return query(run_dir, "SELECT * FROM docs ORDER BY id")


def _side(run_dir: Path) -> tuple[pa.Table, pa.Table]:
    return (query(run_dir, "SELECT id, stage, reason, keeper_id FROM rejected ORDER BY ALL"),
            query(run_dir, "SELECT * FROM quarantine ORDER BY ALL"))


@pytest.fixture(scope="module")
def clean(corpus, tmp_path_factory, ray_session) -> Path:
    """An uninterrupted run to compare with."""
    out = tmp_path_factory.mktemp("clean") / "run"
    run_pipeline(load_config(data=_cfg(corpus, out)), quiet=True)
    return out


def _flip(path: Path, at: int, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[at:at + n] = bytes(b ^ 0xFF for b in data[at:at + n])
    path.write_bytes(bytes(data))


def _copy(clean: Path, tmp_path: Path) -> Path:
    """A copy of the clean run (delta shards name their base by a relative path, so it moves)."""
    out = tmp_path / "run"
    shutil.copytree(clean, out)
    return out


def test_damaged_shards_are_rebuilt_and_the_run_equals_a_clean_one(corpus, clean, tmp_path, capsys, ray_session):
    out = _copy(clean, tmp_path)
    ingest_parts = sorted((out / "ingest").glob("part-*.parquet"))
    lang_parts = sorted((out / "langid").glob("part-*.parquet"))
    dedup_parts = sorted((out / "exact_dedup").glob("part-*.parquet"))
    assert len(ingest_parts) >= 3
    # Truncate an ingest shard, flip 16 bytes inside a stage shard's data, replace a dedup shard
    # (a delta shard, so a valid Parquet file) with another shard's file, and damage a file of
    # rejected documents, which only the dedup stage's own skip rule reads.
    with open(ingest_parts[0], "r+b") as f:
        f.truncate(ingest_parts[0].stat().st_size // 2)
    _flip(lang_parts[1], lang_parts[1].stat().st_size // 3)
    shutil.copyfile(dedup_parts[1], dedup_parts[2])
    rejected = max((out / "rejected" / "exact_dedup").glob("*.parquet"), key=lambda p: p.stat().st_size)
    _flip(rejected, rejected.stat().st_size // 2)
    from curate.stages.dedup.output import part_done

    m = shardio.read_marker(out / "exact_dedup", rejected.stem)
    assert not part_done(out / "exact_dedup", out / "rejected" / "exact_dedup", rejected.stem,
                         m["input_fingerprint"], m["config_hash"])
    capsys.readouterr()

    ingest, langid, _ = run_pipeline(load_config(data=_cfg(corpus, out)), quiet=True)
    said = [line for line in capsys.readouterr().err.splitlines() if "rerunning" in line]
    assert any(line.startswith("ingest: ") and ingest_parts[0].name in line and "truncated" in line for line in said)
    assert any(line.startswith("langid: ") and lang_parts[1].name in line for line in said)
    assert any(line.startswith("exact_dedup: ") and dedup_parts[2].name in line for line in said)
    assert any(line.startswith("exact_dedup: ") and f"rejected/exact_dedup/{rejected.name}" in line for line in said)
    assert ingest.skipped == ingest.shards - 1 and langid.skipped <= langid.shards - 1
    assert _docs(out).equals(_docs(clean))
    assert _side(out) == _side(clean)
    # Nothing is left to repair: the next run reuses every shard and says nothing.
    third = run_pipeline(load_config(data=_cfg(corpus, out)), quiet=True)
    assert "rerunning" not in capsys.readouterr().err
    assert [r.skipped for r in third] == [r.shards for r in third]


def test_markers_of_an_earlier_version_are_redone_with_a_message(corpus, clean, tmp_path, capsys, ray_session):
    out = _copy(clean, tmp_path)
    for p in out.glob("*/_done/*.json"):  # as curate wrote them before shard digests
        m = json.loads(p.read_text())
        m.pop("files")
        p.write_text(json.dumps({**m, "version": 2}))
    capsys.readouterr()
    again = run_pipeline(load_config(data=_cfg(corpus, out)), quiet=True)
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "marker version 2" in line]) == 1
    assert all(r.skipped == 0 for r in again)
    assert _docs(out).equals(_docs(clean))


def test_marker_records_size_and_digest_of_each_file(tmp_path):
    table = pa.table({"x": list(range(100))})
    shardio.write_parquet(tmp_path / "s" / "part-0.parquet", table)
    shardio.write_parquet(tmp_path / "rej" / "part-0.parquet", table.slice(0, 3))
    m = ledger.write_marker(tmp_path / "s", "part-0", Marker.new("fp", "ch", ["part-0.parquet"]),
                            also=[tmp_path / "rej" / "part-0.parquet"]).to_dict()
    assert set(m["files"]) == {"part-0.parquet", "../rej/part-0.parquet"}
    assert m["files"]["part-0.parquet"] == {"bytes": (tmp_path / "s" / "part-0.parquet").stat().st_size,
                                            "xxh3": shardio.file_digest(tmp_path / "s" / "part-0.parquet")}
    assert shardio.damage(tmp_path / "s", m) is None
    (tmp_path / "rej" / "part-0.parquet").unlink()
    assert "missing" in shardio.damage(tmp_path / "s", m)


# ---------------------------------------------------------------------------------- disk full

@pytest.fixture
def small_disk(tmp_path):
    """A 256 KB tmpfs, less than a run writes (root only; skips where it cannot be mounted)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def _temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob(".tmp-*")]


def test_writers_remove_their_temporaries_when_the_disk_fills(small_disk):
    big = os.urandom(4 << 20)  # more than the disk holds
    with pytest.raises(shardio.DiskFullError, match="no space left on device writing .*blob.bin"):
        shardio.atomic_write_bytes(small_disk / "blob.bin", big)
    with pytest.raises(shardio.DiskFullError, match="no space left"):
        with shardio.AtomicFile(small_disk / "stream.bin") as f:
            for i in range(0, len(big), 1 << 16):
                f.write(big[i:i + (1 << 16)])
    table = pa.table({"text": [os.urandom(1 << 10).hex() for _ in range(4000)]})  # ~8 MB, incompressible
    with pytest.raises(shardio.DiskFullError, match="no space left on device writing .*t.parquet"):
        shardio.write_parquet(small_disk / "t.parquet", table)
    sink = shardio.ParquetSink(small_disk / "sink.parquet", table.schema, row_group_size=500)
    with pytest.raises(shardio.DiskFullError, match="sink.parquet"):
        for i in range(0, table.num_rows, 500):
            sink.write(table.slice(i, 500))
        sink.close()
    sink.abort()
    assert os.listdir(small_disk) == []


def test_a_full_disk_is_one_error_line_and_the_rerun_completes(corpus, clean, small_disk, tmp_path):
    """Through the CLI, in a fresh process whose Ray workers start with umask 027: after the disk
    fills, one error line and no temporary file; after space is freed, the rerun completes, equals
    the uninterrupted run, and every file it wrote is group-readable and private to others."""
    out = small_disk / "run"
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(_cfg(corpus, out)))

    def run() -> subprocess.CompletedProcess:
        return subprocess.run(f"umask 027 && exec {sys.executable} -m curate.pipeline.cli run {cfg} --workers 2",
                              shell=True, cwd=REPO, capture_output=True, text=True, timeout=300)

    r = run()
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("curate run: error:")]
    assert len(errors) == 1 and "no space left on device writing" in errors[0] and str(small_disk) in errors[0]
    assert _temporaries(out) == []
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = run()
    assert r.returncode == 0, r.stderr
    assert _docs(out).equals(_docs(clean)) and _side(out) == _side(clean)
    modes = _modes(out)
    assert any(k.startswith("exact_dedup/part-") for k in modes) and "ingest/_done/part-00000.json" in modes
    assert set(modes.values()) == {0o640}, modes


# ---------------------------------------------------------------------------------- umask

def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(tmp_path, umask):
    from curate.stages.tokens.megatron import IndexedDatasetWriter
    import numpy as np

    old = os.umask(umask)
    try:
        shardio.write_parquet(tmp_path / "a" / "part.parquet", pa.table({"x": [1, 2]}))
        sink = shardio.ParquetSink(tmp_path / "a" / "sink.parquet", pa.schema([("x", pa.int64())]))
        sink.close()
        ledger.write_marker(tmp_path / "a", "part", Marker.new("fp", "ch", ["part.parquet"]))
        shardio.atomic_write_json(tmp_path / "plan.json", {"groups": []})
        shardio.atomic_write_bytes(tmp_path / "tokens" / "tokenizer.model", b"model")
        with IndexedDatasetWriter(tmp_path / "tokens" / "g" / "tokens", np.dtype(np.uint16)) as w:
            w.add(np.arange(10, dtype=np.uint16), np.array([4, 6]))
    finally:
        os.umask(old)
    modes = _modes(tmp_path)
    assert {"a/part.parquet", "a/sink.parquet", "a/_done/part.json", "plan.json", "tokens/tokenizer.model",
            "tokens/g/tokens.bin", "tokens/g/tokens.idx"} <= set(modes)
    assert set(modes.values()) == {0o666 & ~umask}, modes


def test_a_damaged_token_file_is_rebuilt_by_the_tokenize_stage(clean, tmp_path):
    from curate.stages.docshard import read_docs
    from curate.stages.tokens.tokenizers import TokenizeTask, TokenizerConfig, tokenize_shard, train_tokenizer

    part = sorted((clean / "exact_dedup").glob("part-*.parquet"))[0]
    model = tmp_path / "tok.model"
    texts = read_docs(part, ["text"]).column("text").to_pylist()
    train_tokenizer(texts, TokenizerConfig(vocab_size=400, train_chars=200_000, num_threads=1), model)
    task = TokenizeTask(str(part), str(tmp_path / "tokenize"), str(model), "'all'", "h")
    first = tokenize_shard(task)
    ids = task.ids.read_bytes()
    assert not first.get("skipped") and tokenize_shard(task).get("skipped")
    _flip(task.ids, len(ids) // 2)
    again = tokenize_shard(task)
    assert not again.get("skipped") and task.ids.read_bytes() == ids
