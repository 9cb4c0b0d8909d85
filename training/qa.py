"""QA sets as `curate eval` scores them and as `training/lm_eval_tasks.py` writes them for lm-eval:
the reader, the prompt and the target delimiter both use, so both measure the same thing."""

from __future__ import annotations

from pathlib import Path

from curate.records.jsonl import json_objects

QA_PROMPT = "Question: {question}\nAnswer:"
TARGET_DELIMITER = " "  # lm-evaluation-harness's default


def read_qa(path: str | Path) -> list[dict]:
    """A QA set: JSONL of {"question", "answer", "choices"?}; the answer must be one of the choices."""
    items = []
    for n, d in json_objects(path, "QA items"):
        if not isinstance(d.get("question"), str) or not isinstance(d.get("answer"), str):
            raise ValueError(f"{path}:{n}: a QA line is an object with string \"question\" and \"answer\"")
        choices = d.get("choices")
        if choices is not None:
            if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) for c in choices):
                raise ValueError(f"{path}:{n}: \"choices\" must be a list of at least two strings")
            if d["answer"] not in choices:
                raise ValueError(f"{path}:{n}: the answer {d['answer']!r} is not one of the choices")
        items.append({"question": d["question"], "answer": d["answer"], "choices": choices})
    return items
