"""Models, checkpoints and exported model folders follow the umask like every other output, so
other users of shared storage can read them (0o600 files or 0o700 folders would hide them)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from test_integrity import _modes
from test_scorers_corpus import pydoc_chunks, stdlib_code


def _dir_modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_dir()}


@pytest.fixture(scope="module")
def fasttext_model(tmp_path_factory):
    from curate.scorers import ft

    examples = [("good", t) for t in pydoc_chunks(30)] + [("bad", t) for t in stdlib_code(30)]
    return ft.train_on_examples(examples, tmp_path_factory.mktemp("ft"), **ft.FastTextParams(bucket=20_000).__dict__)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_models_checkpoints_and_exports_follow_the_umask(tmp_path, umask, fasttext_model):
    import torch

    from curate.scorers import ft
    from curate.training.checkpoint import save_checkpoint
    from curate.training.hf_io import init_model, load_model
    from curate.training.loop import export_final

    old = os.umask(umask)
    try:
        ft.save_model(fasttext_model, tmp_path / "models" / "quality_x.bin", {"labels": ["good", "bad"]})
        init = init_model(tmp_path / "base", vocab_size=256)
        model = load_model(init)
        save_checkpoint(tmp_path / "train", 1, model, torch.optim.AdamW(model.parameters()), {"tokens": 0})
        export_final(tmp_path / "train", 1, None)  # no tokenizer to write
    finally:
        os.umask(old)
    files, dirs = _modes(tmp_path), _dir_modes(tmp_path)
    assert {"models/quality_x.bin", "models/quality_x.json", "base/config.json",
            "train/checkpoints/step-000001/trainer.pt", "train/model/config.json"} <= set(files)
    assert {"base", "train/checkpoints/step-000001", "train/model"} <= set(dirs)
    assert set(files.values()) == {0o666 & ~umask}, files
    assert set(dirs.values()) == {0o777 & ~umask}, dirs
    assert not [p for p in tmp_path.rglob(".tmp-*")]
