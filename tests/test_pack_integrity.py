"""Pack-group markers vouch for their files: a rerun of `curate pack` rebuilds a group whose
.bin/.idx, rows or held-out set no longer match, says so in one line, and ends equal to a clean pack."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from curate.pipeline.commands.pack import pack
from curate.stages import shardio
from curate.stages.base import LocalExecutor
from test_pack_common import load_docs, make_run, write_plan

GROUPS = [
    {"name": "code", "where": "domain = 'code'", "requested_tokens": 1000, "max_epochs": 4.0},
    {"name": "prose", "where": "domain <> 'code'", "requested_tokens": 1000, "max_epochs": 4.0},
]


def _pack(run: Path) -> list[str]:
    lines: list[str] = []
    pack(run, vocab_size=1000, executor=LocalExecutor(), echo=lines.append, eval_fraction=0.05)
    return [ln for ln in lines if "rebuilt group" in ln]


def _outputs(run: Path) -> dict[str, str]:
    """Digest of every file `pack` writes, but tokens/index.json (it holds timings)."""
    return {str(p.relative_to(run)): shardio.file_digest(p) for d in ("tokens", "eval") for p in sorted((run / d).rglob("*"))
            if p.is_file() and p.name != "index.json"}


def _flip(path: Path, offset: int, n: int = 16) -> None:
    data = bytearray(path.read_bytes())
    data[offset:offset + n] = bytes(b ^ 0xFF for b in data[offset:offset + n])
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def clean(system_corpus, tmp_path_factory) -> Path:
    run = make_run(tmp_path_factory.mktemp("pack_integrity") / "run", load_docs(system_corpus, limit=240), n_parts=2)
    write_plan(run, GROUPS, seq_len=128)
    assert _pack(run) == []
    return run


def test_damaged_group_files_are_rebuilt_and_equal_a_clean_pack(clean, tmp_path):
    run = shutil.copytree(clean, tmp_path / "run")
    want = _outputs(clean)
    assert {"tokens/code/tokens.bin", "tokens/prose/tokens.idx", "eval/code.parquet"} <= set(want)
    assert _pack(run) == [] and _outputs(run) == want  # an intact copy is reused as it is
    tokens_bin = run / "tokens" / "code" / "tokens.bin"
    with open(tokens_bin, "r+b") as f:
        f.truncate(tokens_bin.stat().st_size // 2)
    _flip(run / "tokens" / "prose" / "tokens.idx", 40)
    lines = _pack(run)
    assert len(lines) == 2, lines
    assert "tokens/code/tokens.bin is" in lines[0] and "truncated" in lines[0] and lines[0].endswith("rebuilt group code")
    assert "tokens/prose/tokens.idx has other bytes" in lines[1] and lines[1].endswith("rebuilt group prose")
    assert _outputs(run) == want
    # Packed rows and the held-out set are vouched for too; a rerun after the rebuild reuses all.
    _flip(run / "tokens" / "code" / "rows.bin", 8)
    (run / "eval" / "prose.parquet").write_bytes((run / "eval" / "code.parquet").read_bytes())
    lines = _pack(run)
    assert len(lines) == 2 and "rows.bin" in lines[0] and "eval/prose.parquet" in lines[1], lines
    assert _outputs(run) == want
    assert _pack(run) == []


def test_a_marker_without_file_digests_is_rebuilt(clean, tmp_path):
    run = shutil.copytree(clean, tmp_path / "run")
    marker = run / "tokens" / "_done" / "code.json"
    old = json.loads(marker.read_text())
    marker.write_text(json.dumps({k: v for k, v in old.items() if k not in ("files", "outputs")}))
    lines = _pack(run)
    assert len(lines) == 1 and "records no digest of code/" in lines[0], lines
    assert _outputs(run) == _outputs(clean)
    assert json.loads(marker.read_text())["files"] == old["files"]


def test_a_killed_pack_reuses_its_finished_groups(clean, tmp_path):
    """As if killed while packing `prose`: `code` is done (marker written), `prose` half written."""
    run = shutil.copytree(clean, tmp_path / "run")
    (run / "tokens" / "_done" / "prose.json").unlink()
    (run / "tokens" / "index.json").unlink()
    rows = run / "tokens" / "prose" / "rows.bin"
    with open(rows, "r+b") as f:
        f.truncate(rows.stat().st_size // 3)
    done = [run / "tokens" / "_done" / "code.json", run / "tokens" / "code" / "rows.bin"]
    before = [p.stat().st_mtime_ns for p in done]
    assert _pack(run) == []  # a group without a marker is simply to be done: no damage to report
    assert [p.stat().st_mtime_ns for p in done] == before  # `code` reused, not rewritten
    assert _outputs(run) == _outputs(clean)
    # The runner's own per-shard markers of the stage say the rerun redid nothing it had done.
    assert sorted(p.stem for p in (run / "pack" / "_done").glob("*.json")) == ["part-00000-000", "part-00001-000"]


def test_pack_is_no_stage_a_config_lists(tmp_path):
    from curate.pipeline.running.config import load_config
    from curate.records.errors import ConfigError

    with pytest.raises(ConfigError, match=r"stages\[1\].*curate pack RUN_DIR"):
        load_config(data={"name": "x", "out": str(tmp_path / "r"), "inputs": [{"path": "x"}],
                          "stages": [{"kind": "tokenize"}, {"kind": "pack", "groups": ["all"]}]})
