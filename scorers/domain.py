"""Domain tagging: content detectors and rules over source / url / text, and a fastText tagger.

The default taxonomy decides from the text alone: scorers/structure.py's detectors recognise a
changelog, a man page, markup, code, configuration, licence text, a dictionary or a table by
its form, so a corpus's own source names and URLs change nothing. Source and URL rules are hints
a user may add for a corpus whose names do speak (they are tried first). The fastText tagger
generalises to what no rule decides, trained on seeds labelled by the rules or by a labelled
file. Rules are tried in taxonomy order, first match wins.
"""

from __future__ import annotations

import fnmatch
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curate.scorers import ft
from curate.scorers.ft import FastTextParams, split_holdout
from curate.scorers.structure import PRIORITY, check_names, code_fraction, detect

@dataclass
class DomainRule:
    """One domain of the taxonomy and the rules that assign it (any rule matching is enough)."""

    name: str
    """Domain label, e.g. `code` (letters, digits, '_', '-', '.')."""
    source: list[str] = field(default_factory=list)
    """Glob patterns matched against the `source` column, e.g. `python-*`."""
    url: list[str] = field(default_factory=list)
    """Regular expressions searched in the `url` column (paths of local files are `file://` urls)."""
    text: list[str] = field(default_factory=list)
    """Regular expressions searched in the first 5,000 characters of the text (multiline)."""
    code: float | None = None
    """Match when at least this fraction of lines looks like code (see `code_fraction`); null = off."""
    detect: list[str] = field(default_factory=list)
    """Content detectors (scorers/structure.py: changelog, man, code, legal, config, rst, asciidoc,
    markdown, html, dictionary, table) whose match assigns this domain."""

    def __post_init__(self):
        if not re.fullmatch(r"[\w.\-]+", self.name or ""):
            raise ValueError(f"name: domain {self.name!r} must be letters, digits, '_', '-' or '.'")
        for where, patterns in (("url", self.url), ("text", self.text)):
            for p in patterns:
                try:
                    re.compile(p)
                except re.error as e:
                    raise ValueError(f"{where}: domain {self.name}: bad regular expression {p!r}: {e}") from None
        if self.code is not None and not 0.0 < self.code <= 1.0:
            raise ValueError(f"code: domain {self.name}: a fraction in (0, 1] or null, got {self.code}")
        if not isinstance(self.detect, list):
            raise ValueError(f"detect: domain {self.name}: a list of detector names, got {self.detect!r}")
        check_names(self.detect, f"detect: domain {self.name}")

    def as_rule(self) -> dict:
        return asdict(self)


def default_taxonomy() -> list[DomainRule]:
    """Domains for continued pretraining mixtures, decided by content detectors alone; what none
    of them claims (prose) gets the stage's `default`."""
    return [
        DomainRule("code", detect=["code", "config"]),
        DomainRule("changelog", detect=["changelog"]),
        DomainRule("legal", detect=["legal"]),
        DomainRule("tech-docs", detect=["man", "rst", "asciidoc", "markdown", "html"]),
        DomainRule("reference", detect=["dictionary", "table"]),
    ]


def hint_taxonomy() -> list[DomainRule]:
    """Source and URL rules for curate's own corpus (`curate corpus system`): hints a user may put
    before the detectors when a corpus's names speak; most specific first."""
    ext = r"\.(py|pyi|c|h|cc|cpp|hpp|js|ts|go|rs|java|rb|sh|pl|php|cs|swift|kt|scala|lua|sql)(#\d+)?$"
    return [
        DomainRule("code", source=["python-stdlib", "*code*", "github*"], url=[ext], code=0.4),
        DomainRule("changelog", source=["changelog", "*release-notes*"],
                   url=[r"(?i)changelog|/NEWS(\.\w+)?(#\d+)?$|release[-_]notes"]),
        DomainRule("legal", source=["license", "copyright", "*legal*"],
                   url=[r"common-licenses/", r"/copyright(#\d+)?$", r"(?i)/(license|copying)[^/]*$"]),
        DomainRule("tech-docs", source=["man", "pydoc", "*docs*", "*manual*"],
                   url=[r"/man/", r"^pydoc:", r"(?i)/docs?/", r"readthedocs\.io", r"\.(md|rst)(#\d+)?$"]),
        DomainRule("reference", source=["*wiki*", "*encyclop*", "*dictionary*"], url=[r"wikipedia\.org", r"wiktionary\.org"]),
        DomainRule("conversational", source=["*stackexchange*", "*stackoverflow*", "*reddit*", "*forum*", "*chat*"],
                   url=[r"stackoverflow\.com|stackexchange\.com|reddit\.com|/forums?/"]),
        DomainRule("news", source=["*news*"], url=[r"(?i)/news/|/20\d\d/[01]\d/[0-3]\d/"]),
        DomainRule("literature", source=["*gutenberg*", "*books*", "*fiction*"], url=[r"gutenberg\.org"]),
    ]


class RuleTagger:
    """`rules`: DomainRule entries (or dicts of their fields) in taxonomy order.
    A rule matches when any of its conditions holds; metadata conditions of all rules are tried
    before content conditions."""

    def __init__(self, rules: Sequence[DomainRule | dict[str, Any]]):
        self.rules = []
        self.by_detector: dict[str, str] = {}  # detector -> the first domain that lists it
        for r in rules:
            r = r if isinstance(r, DomainRule) else DomainRule(**r)
            self.rules.append((r.name, list(r.source), [re.compile(p) for p in r.url],
                               [re.compile(p, re.MULTILINE) for p in r.text], r.code))
            for d in r.detect:
                self.by_detector.setdefault(d, r.name)
        self.detectors = [d for d in PRIORITY if d in self.by_detector]
        self.last_detector: str | None = None

    def tag_one(self, text: str, source: str | None, url: str | None) -> str | None:
        # Metadata first (it says where a document came from), then content, each in taxonomy order:
        # a man page that shows code examples is still documentation.
        self.last_detector = None
        for name, sources, urls, _, _ in self.rules:
            if source and any(fnmatch.fnmatchcase(source, g) for g in sources):
                return name
            if url and any(p.search(url) for p in urls):
                return name
        head = text[:5000]
        for name, _, _, texts, code in self.rules:
            if texts and any(p.search(head) for p in texts):
                return name
            if code is not None and code_fraction(text) >= code:
                return name
        # Detectors last, in their own order (most specific form first, scorers/structure.py).
        self.last_detector = detect(text, self.detectors) if self.detectors else None
        return self.by_detector.get(self.last_detector) if self.last_detector else None

    def tag(self, texts: Sequence[str], sources: Sequence[str | None], urls: Sequence[str | None]) -> list[str | None]:
        return [self.tag_one(t, s, u) for t, s, u in zip(texts, sources, urls)]


def domain_params() -> FastTextParams:
    """Defaults for the tagger. Several classes from a few hundred seeds need more passes than
    DCLM's binary classifier: with epoch 5 / lr 0.1 the smallest class is never predicted. fastText's
    text-classification tutorial (https://fasttext.cc/docs/en/supervised-tutorial.html) raises
    epoch to 25 and lr to 0.5-1.0 for the same reason."""
    return FastTextParams(epoch=25, lr=0.5)


def train_domain(examples: Sequence[tuple[str, str]], model_path: str | Path, *,
                 params: FastTextParams | None = None, holdout: float = 0.2, seed: int = 0,
                 threads: int = 1, extra_meta: dict | None = None) -> dict:
    """Train a multi-class tagger on (label, text) seeds; held-out accuracy and confusion matrix.

    The split is stratified per label so every domain is in the held-out set.
    """
    params = params or domain_params()
    by_label: dict[str, list[tuple[str, str]]] = {}
    for label, text in examples:
        if not re.fullmatch(r"[\w.\-]+", label):
            raise ValueError(f"domain label {label!r}: use letters, digits, '_', '-' or '.'")
        by_label.setdefault(label, []).append((label, text))
    small = [lab for lab, xs in by_label.items() if len(xs) < 2]
    if len(by_label) < 2 or small:
        raise ValueError(f"need at least 2 labels with 2+ examples each; too few: {small or list(by_label)}")
    train, held = [], []
    for k, label in enumerate(sorted(by_label)):
        tr, ho = split_holdout(by_label[label], holdout, seed + k)
        train += tr
        held += ho
    random.Random(seed).shuffle(train)
    model_path = Path(model_path)
    model = ft.train_on_examples(train, model_path.parent, seed=seed, threads=threads, **asdict(params))
    labels = sorted(by_label)
    pred, _ = predict_domains(model, [t for _, t in held])
    index = {lab: i for i, lab in enumerate(labels)}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (true, _), p in zip(held, pred):
        matrix[index[true], index[p]] += 1  # the model only knows the training labels
    accuracy = float(np.mean([p == true for (true, _), p in zip(held, pred)])) if held else float("nan")
    lowered = ft.lr_warning(model, params.lr)
    meta = {"kind": "domain", "labels": labels, "params": {**asdict(params), "lr": ft.trained_lr(model)}, "seed": seed,
            "n_train": {lab: sum(1 for x, _ in train if x == lab) for lab in labels},
            "heldout": {"accuracy": accuracy, "n": len(held), "confusion": matrix.tolist()},
            **({"warnings": [lowered]} if lowered else {}), **(extra_meta or {})}
    ft.save_model(model, model_path, meta)
    return meta


def predict_domains(model: Any, texts: Sequence[str], max_chars: int | None = None) -> tuple[list[str], list[float]]:
    """Top-1 label and its probability per text."""
    labels, probs = ft.top1(model, [ft.one_line(t, max_chars) for t in texts])
    return [lab if lab is not None else "unknown" for lab in labels], probs


def plot_confusion(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Confusion matrix (rows: true, columns: predicted) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.2 + 0.8 * len(labels), 1.0 + 0.7 * len(labels)))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(j, i, str(m[i, j]), ha="center", va="center",
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(title or "held-out confusion")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
