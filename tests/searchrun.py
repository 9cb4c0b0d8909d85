"""A small real-text run for `curate compare` / `curate search` tests: pydoc topic help and
standard-library source tokenized with a sentencepiece model trained on them, packed into groups
(tokens/), each group's last documents held out as RUN/eval/<group>.parquet, a plan.json, and a
random tiny base model on the run's vocabulary."""

from __future__ import annotations

import json
from pathlib import Path

SEQ, VOCAB = 64, 512


def build_run(root: Path, groups: dict[str, list[str]], held_out: int = 4, max_epochs: float = 100.0) -> tuple[Path, Path, dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sentencepiece as spm

    from tests.tinylm import train_sp
    from curate.training.hf_io import init_model
    from curate.training.synthetic import write_plan, write_tokens

    run = root / "run"
    sp_path = train_sp([t for ts in groups.values() for t in ts], root / "sp.model", VOCAB)
    sp = spm.SentencePieceProcessor(model_file=str(sp_path))
    docs, sets = {}, {}
    for g, texts in groups.items():
        docs[g] = [sp.encode(t) for t in texts[:-held_out]]
        sets[g] = texts[-held_out:]
    write_tokens(run, docs, SEQ, VOCAB)
    (run / "tokens" / "tokenizer.model").write_bytes(sp_path.read_bytes())
    (run / "eval").mkdir(parents=True)
    index = {"sets": {}}
    for g, texts in sets.items():
        rows = [{"id": f"{g}-{i}", "text": t, "source": g, "domain": g, "n_tokens": len(sp.encode(t)), "group": g}
                for i, t in enumerate(texts)]
        pq.write_table(pa.Table.from_pylist(rows), run / "eval" / f"{g}.parquet")
        index["sets"][g] = {"kind": "group", "n_docs": len(rows), "path": f"eval/{g}.parquet"}
    (run / "eval" / "index.json").write_text(json.dumps(index))
    avail = {g: int(sum(len(d) + 1 for d in ds)) for g, ds in docs.items()}
    names = list(groups)
    plan = write_plan(run, [{g: 1 / len(names) for g in names}], [SEQ * 4 * 8], SEQ,
                      {"kind": "cosine", "lr_start": 3e-3, "lr_end": 3e-4, "warmup_tokens": 0}, avail, max_epochs)
    init_model(root / "base", "tiny", vocab_size=VOCAB, seed=0)
    return run, root / "base", plan


def train_overrides() -> dict:
    """A train config for arms of a few steps of 4 rows (tests write it as YAML)."""
    return {"batch_tokens": SEQ * 4, "micro_batch_rows": 4, "log_every": 1, "eval_every": 0, "checkpoint_every": 0,
            "keep_checkpoints": 1, "holdout_rows": 2}
