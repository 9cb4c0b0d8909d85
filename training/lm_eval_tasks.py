"""lm-evaluation-harness on curate's checkpoints: local task YAMLs, QA sets as tasks, offline runs.

`qa_task()` writes a QA set (`{"question", "answer", "choices"?}` JSONL) as an lm-eval task over
a local JSON file (`dataset_path: json`), with the prompt and target delimiter that
`training/evaluate.py` scores with (`training/qa.py`), so `curate eval --qa` and lm-eval measure the same thing.
`run_lm_eval()` runs task names or YAML files through lm-eval's `hf` model on a Hugging Face
folder (a curate checkpoint or export, which must carry its tokenizer) with the Hub and datasets
offline: a task whose data is not local fails instead of downloading.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curate.training.qa import QA_PROMPT, TARGET_DELIMITER, read_qa

OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _jinja(template: str) -> str:
    return template.replace("{question}", "{{question}}")


def qa_task(qa_path: str | Path, out_dir: str | Path, name: str | None = None) -> Path:
    """Write `out_dir/<name>.yaml` and its data `out_dir/<name>.jsonl`; returns the YAML path.

    Items with choices make a `multiple_choice` task (acc, acc_norm); a set without choices makes a
    `loglikelihood` task (perplexity of the answer, and whether it is the greedy continuation).
    A set must be one or the other.
    """
    import yaml

    qa_path, out_dir = Path(qa_path), Path(out_dir)
    name = name or "curate_" + "".join(c if c.isalnum() else "_" for c in qa_path.stem)
    items = read_qa(qa_path)
    with_choices = [it["choices"] is not None for it in items]
    if any(with_choices) and not all(with_choices):
        raise ValueError(f"{qa_path}: some items have choices and some do not; an lm-eval task is one kind")
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / f"{name}.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for it in items:
            row = dict(it, label=it["choices"].index(it["answer"]) if it["choices"] else None)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    task: dict[str, Any] = {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data.resolve())}},
        "test_split": "test",
        "doc_to_text": _jinja(QA_PROMPT),
        "target_delimiter": TARGET_DELIMITER,
    }
    if all(with_choices):
        task.update(output_type="multiple_choice", doc_to_choice="{{choices}}", doc_to_target="{{label}}",
                    metric_list=[{"metric": "acc", "aggregation": "mean", "higher_is_better": True},
                                 {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}])
    else:
        task.update(output_type="loglikelihood", doc_to_target="{{answer}}",
                    metric_list=[{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
                                 {"metric": "acc", "aggregation": "mean", "higher_is_better": True}])
    path = out_dir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(task, sort_keys=False, allow_unicode=True))
    return path


def resolve_tasks(tasks: list[str], work_dir: Path) -> tuple[list[str], list[str]]:
    """(task names, include paths): a YAML file adds its folder and its `task` name; a `.jsonl` QA set
    becomes a task written into `work_dir`; anything else is an lm-eval task name."""
    import yaml

    names, include = [], []
    for t in tasks:
        p = Path(t)
        if p.suffix in (".yaml", ".yml"):
            if not p.is_file():
                raise FileNotFoundError(f"lm-eval task file {p} does not exist")
            spec = yaml.safe_load(p.read_text()) or {}
            if not isinstance(spec, dict) or "task" not in spec:
                raise ValueError(f"{p}: an lm-eval task YAML needs a `task:` name")
            names.append(str(spec["task"]))
            include.append(str(p.parent.resolve()))
        elif p.suffix == ".jsonl":
            y = qa_task(p, work_dir)
            names.append(y.stem)
            include.append(str(work_dir.resolve()))
        else:
            names.append(t)
    return names, sorted(set(include))


def run_lm_eval(model: str | Path, tasks: list[str], device: str = "cpu", batch_size: int = 8,
                limit: int | None = None, work_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Run lm-eval `tasks` on the Hugging Face folder `model`; returns task -> metric -> value."""
    import tempfile

    folder = Path(model)
    if not (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{folder} has no tokenizer (tokenizer.model or tokenizer.json): lm-eval loads the "
                                f"tokenizer from the model folder; export the checkpoint with its tokenizer")
    for k, v in OFFLINE.items():
        os.environ.setdefault(k, v)
    try:
        from lm_eval import evaluator
        from lm_eval.tasks import TaskManager
    except ImportError as e:
        raise ImportError("lm-eval is needed for --tasks: pip install 'lm-eval[hf]'") from e

    with tempfile.TemporaryDirectory() as tmp:
        names, include = resolve_tasks(tasks, Path(work_dir or tmp))
        local = set()
        for d in include:
            local |= {yaml_task_name(p) for p in Path(d).glob("*.y*ml")}
        # Indexing lm-eval's own few thousand tasks takes long; only when a task is not local.
        manager = TaskManager(include_path=include or None, include_defaults=not set(names) <= local)
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
        out = evaluator.simple_evaluate(
            # No add_bos_token: the folder's tokenizer_config.json says whether the model saw BOS.
            model="hf", model_args={"pretrained": str(folder), "dtype": dtype},
            tasks=names, task_manager=manager, device=device, batch_size=batch_size, limit=limit,
            log_samples=False, bootstrap_iters=0)
    results = {}
    for task, metrics in (out or {}).get("results", {}).items():
        results[task] = {k.split(",")[0]: v for k, v in metrics.items()
                         if isinstance(v, (int, float)) and not k.startswith("alias") and "_stderr" not in k}
    return results


def yaml_task_name(path: Path) -> str | None:
    import yaml

    try:
        spec = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    return spec.get("task") if isinstance(spec, dict) else None
