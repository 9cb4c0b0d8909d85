"""Hugging Face datasets as inputs (`format: hf`), read with pyarrow alone, offline:
- a `Dataset.save_to_disk` / `DatasetDict.save_to_disk` folder (`state.json` / `dataset_dict.json`
  beside Arrow stream files), also recognised under `format: auto`;
- a folder of a dataset's data files (Parquet, JSON/JSONL, Arrow), as a Hub repository lays them
  out (`data/train-00000-of-00002.parquet`, `<config>/<split>/0000.parquet`);
- `hf:owner/name`: that dataset in the local Hugging Face cache, nothing downloaded: the Hub
  snapshot (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`), else the
  Arrow files `datasets.load_dataset` left in `$HF_DATASETS_CACHE` (else `$HF_HOME/datasets`).

`split` and `config` choose among the files by the folder and file names of these layouts.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterator

from curate.stages.inputs.readers import Item, ReadTask, open_or_failure

HF_PREFIX = "hf:"
# Data files of a dataset; everything else in a dataset folder (README.md, .gitattributes, the
# metadata JSON of save_to_disk) describes it.
_DATA = re.compile(r"\.(parquet|arrow|jsonl|json|ndjson)(\.gz|\.zst|\.zstd)?$")
_METADATA = {"state.json", "dataset_info.json", "dataset_dict.json", "dataset_infos.json"}


def is_saved_dataset(path: str) -> bool:
    """Whether `path` is a folder written by `save_to_disk` (a Dataset or a DatasetDict)."""
    return os.path.isfile(os.path.join(path, "state.json")) or os.path.isfile(os.path.join(path, "dataset_dict.json"))


def saved_dataset_files(root: str, split: str | None, where: str) -> list[str]:
    """The Arrow files of a save_to_disk folder, in the dataset's row order (all splits of a
    DatasetDict unless `split` names one)."""
    dd = os.path.join(root, "dataset_dict.json")
    if os.path.isfile(dd):
        splits = json.loads(Path(dd).read_text())["splits"]
        if split is not None and split not in splits:
            raise ValueError(f"{where}.split: {split!r} is not a split of {root} (it has {', '.join(splits)})")
        return [f for s in ([split] if split else splits) for f in saved_dataset_files(os.path.join(root, s), None, where)]
    state = json.loads(Path(root, "state.json").read_text())
    return [os.path.join(root, f["filename"]) for f in state.get("_data_files", [])]


def saved_dataset_objects(urls: list[str]) -> list[str]:
    """The objects of a listing to read: where it holds a save_to_disk folder (its `state.json`
    or `dataset_dict.json`), that folder's Arrow files in name order (`data-00000-of-...`), not
    its metadata JSON; every object otherwise."""
    roots = {u.rsplit("/", 1)[0] for u in urls if u.rsplit("/", 1)[-1] in ("state.json", "dataset_dict.json")}
    if not roots:
        return urls
    inside = lambda u: any(u.startswith(r + "/") for r in roots)  # noqa: E731
    return [u for u in urls if not inside(u) or (u.endswith(".arrow") and u.rsplit("/", 1)[-1] not in _METADATA)]


def _parts(path: str, root: str) -> list[str]:
    return os.path.relpath(path, root).replace(os.sep, "/").lower().split("/")


def _chosen(rel: list[str], split: str | None, config: str | None) -> bool:
    """Whether a data file at `rel` (its folders and name) belongs to `config` and `split`, by the
    Hub's layouts: `<config>/...` folders, `<split>/` folders, `<split>-00000-of-...` names."""
    if config is not None and config.lower() not in rel[:-1]:
        return False
    if split is None:
        return True
    s = split.lower()
    name = rel[-1]
    return s in rel[:-1] or name.startswith((f"{s}-", f"{s}.", f"{s}_")) or f"-{s}." in name or f"-{s}-" in name


def dataset_files(root: str, split: str | None, config: str | None, where: str) -> list[str]:
    """The data files of a dataset folder (its save_to_disk Arrow files, or its Parquet/JSON/Arrow
    shards chosen by `split` and `config`), sorted."""
    if is_saved_dataset(root):
        return saved_dataset_files(root, split, where)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        files += [os.path.join(folder, n) for n in names if _DATA.search(n) and n not in _METADATA]
    chosen = sorted(f for f in files if _chosen(_parts(f, root), split, config))
    if not chosen:
        which = ", ".join(f"{k} {v!r}" for k, v in (("config", config), ("split", split)) if v)
        raise ValueError(f"{where}.path: no data files (Parquet, JSON, Arrow) in {root}" + (f" for {which}" if which else ""))
    return chosen


def _hf_home() -> Path:
    return Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")


def resolve_cached(name: str, revision: str, where: str) -> str:
    """The local folder holding dataset `owner/name` in the Hugging Face cache; never downloads."""
    hub = Path(os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE") or _hf_home() / "hub")
    repo = hub / f"datasets--{name.replace('/', '--')}"
    ref = repo / "refs" / revision
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / commit
    if snapshot.is_dir():
        return str(snapshot)
    processed = Path(os.environ.get("HF_DATASETS_CACHE") or _hf_home() / "datasets") / name.replace("/", "___")
    if processed.is_dir():
        return str(processed)
    raise ValueError(f"{where}.path: dataset {name!r} is not in the local Hugging Face cache (looked in {repo} "
                     f"and {processed}); download it once with `huggingface-cli download --repo-type dataset "
                     f"{name}` where the network is reachable, or give its folder as path")


def read_arrow(task: ReadTask) -> Iterator[Item]:
    """Every row of an Arrow file (the IPC stream format save_to_disk writes, or the file format)."""
    import pyarrow as pa

    source, failed = open_or_failure(task.path)
    if failed is not None:
        yield failed
        return
    row = 0
    with source:
        try:
            head = source.read(6)
            source.seek(0)
            reader = pa.ipc.open_file(source) if head == b"ARROW1" else pa.ipc.open_stream(source)
            batches = (reader.get_batch(i) for i in range(reader.num_record_batches)) if head == b"ARROW1" else reader
            for batch in batches:
                for rec in batch.to_pylist():
                    row += 1
                    yield Item(row, None, rec)
        except (pa.ArrowInvalid, OSError, EOFError) as e:
            yield Item(row + 1, None, None, "unreadable_arrow", f"after row {row}: {type(e).__name__}: {e}")
