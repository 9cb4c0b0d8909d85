"""A mixture group no document falls into: `curate pack` writes no dataset for it (an empty `.bin`
cannot be memory-mapped by numpy or megatron-core), meta.json says it is empty, and the trainer
trains a plan that gives it no weight and refuses, by name, one that does."""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from curate.pipeline.commands.pack import pack
from curate.stages.base import LocalExecutor
from curate.stages.tokens.packing import DATA_FILES
from test_pack_common import make_run, write_plan

SEQ = 64


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))[:24]
    docs = [{"text": f.read_text(encoding="utf-8", errors="replace")[:4000], "source": "python-stdlib"} for f in files]
    run = make_run(tmp_path_factory.mktemp("empty") / "run", docs, n_parts=2)
    write_plan(run, [{"name": "code", "where": "domain = 'code'"}, {"name": "none", "where": "source = 'nowhere'"}],
               seq_len=SEQ)
    pack(run, vocab_size=400, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    return run


def test_an_empty_group_gets_meta_only_and_every_dataset_written_maps(packed):
    tokens = packed / "tokens"
    meta = json.loads((tokens / "none" / "meta.json").read_text())
    assert meta["n_docs"] == meta["n_rows"] == meta["n_tokens"] == 0
    assert not any((tokens / "none" / f).exists() for f in DATA_FILES)
    assert json.loads((tokens / "index.json").read_text())["groups"]["none"]["n_rows"] == 0
    written = sorted(tokens.glob("*/tokens.bin"))
    assert [p.parent.name for p in written] == ["code"]
    for p in written + sorted(tokens.glob("*/rows.bin")):
        assert p.stat().st_size > 0 and len(np.memmap(p, dtype=np.uint16, mode="r")) > 0
    try:
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    except Exception:  # megatron-core not installed, or needs what this machine lacks
        return
    for p in written:
        assert len(IndexedDataset(str(p.with_suffix("")), multimodal=False, mmap=True)) > 0


def test_a_rerun_reuses_the_empty_group(packed):
    meta = packed / "tokens" / "none" / "meta.json"
    before = meta.stat().st_mtime_ns
    result = pack(packed, vocab_size=400, executor=LocalExecutor(), echo=lambda s: None, eval_fraction=0.0)
    assert meta.stat().st_mtime_ns == before and result.index["groups"]["none"]["n_docs"] == 0
    assert not any((packed / "tokens" / "none" / f).exists() for f in DATA_FILES)


def test_the_trainer_opens_the_run_and_names_an_empty_group_with_weight(packed, tmp_path):
    from curate.training.config import TrainConfig
    from curate.training.hf_io import init_model
    from curate.training.indexed import PackedRows
    from curate.training.loop import train
    from curate.training.synthetic import write_plan as write_full_plan

    assert PackedRows(packed / "tokens" / "none").n_rows == 0
    code = json.loads((packed / "tokens" / "code" / "meta.json").read_text())["n_tokens"]
    schedule = {"kind": "cosine", "lr_start": 1e-3, "lr_end": 1e-4, "warmup_tokens": 0}
    init_model(tmp_path / "base", "tiny", vocab_size=400)
    cfg = TrainConfig(batch_tokens=SEQ * 4, micro_batch_rows=4, eval_every=0, plots=False, holdout_rows=2)
    write_full_plan(tmp_path, [{"code": 1.0}], [SEQ * 4 * 2], SEQ, schedule, {"code": code, "none": 0})
    res = train(packed, tmp_path / "base", plan_path=tmp_path / "plan.json", config=cfg, out_dir=tmp_path / "o",
                quiet=True)
    assert res["steps"] == 2
    write_full_plan(tmp_path, [{"code": 0.5, "none": 0.5}], [SEQ * 4 * 2], SEQ, schedule, {"code": code, "none": 0})
    with pytest.raises(ValueError, match="group 'none' weight 0.5 but it has no packed rows"):
        train(packed, tmp_path / "base", plan_path=tmp_path / "plan.json", config=cfg, out_dir=tmp_path / "o2",
              quiet=True)
