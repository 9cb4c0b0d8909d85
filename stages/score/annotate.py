"""The annotating scorers: `langid`, `quality`, `domain` (the scorer contract: scorers/base.py).

Each is a config dataclass and a scorer class; the one scoring stage (`stages/score/stage.py`) runs
it: columns added, never rewritten (a column that already exists is an error naming the stage
that must have written it), optional thresholds turning a scorer into a filter (each drop
written to `rejected/` with its reason), models loaded once per worker.

Model paths in a config (`model: models/quality_x.bin`) are relative to the run directory; the
runner binds it with `config.bind_run_dir(run_dir)`, which also stamps a content digest of the
model and its metadata into the config so that retraining a model invalidates the stage's shard
markers (and moving the run directory does not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

import pyarrow as pa

from curate.scorers.base import Buckets, Column, Threshold
from curate.scorers.domain import DomainRule, default_taxonomy
from curate.stages.score.stage import ScoreStage
from curate.stages.shardio import file_digest


class _ModelPath:
    """Mixin for configs naming a model file relative to the run directory.

    The `model` field keeps the path as written (relative paths stay relative), so the config
    hash survives moving the run directory; `model_stamp` is a content digest of the model and
    its `.json` metadata (bucket thresholds), so retraining a model invalidates the stage's
    shard markers and touching it does not.
    """

    model: str | None
    model_stamp: str | None

    def bind_run_dir(self, run_dir: str | os.PathLike) -> None:
        if not self.model:
            return
        path = Path(self.model)
        self._resolved = path if path.is_absolute() else (Path(run_dir) / path).resolve()
        if self._resolved.is_file():
            meta = self._resolved.with_suffix(".json")
            parts = [file_digest(self._resolved)] + ([file_digest(meta)] if meta.is_file() else [])
            self.model_stamp = ":".join(parts)

    def model_file(self) -> Path:
        path = getattr(self, "_resolved", None) or Path(self.model or "")
        if not path.is_file():
            raise FileNotFoundError(f"model {self.model!r} not found (a relative path is resolved against the "
                                    f"run directory; train one with `curate train-quality` / `train-domain`)")
        return path


# ---------------------------------------------------------------------------------------- langid
@dataclass
class LangIDConfig:
    """Config of the `langid` stage (fastText lid.176, offline)."""

    allowed: list[str] | None = None
    """Language codes to keep (e.g. [en, de]); null keeps every language."""
    min_score: float = 0.0
    """Drop documents whose top language probability is below this (reason `lang_low_score`)."""
    max_chars: int = 2000
    """Characters of each document the model reads."""

    def __post_init__(self):
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score: must be in [0, 1], got {self.min_score}")
        if self.max_chars < 1:
            raise ValueError(f"max_chars: must be >= 1, got {self.max_chars}")
        if self.allowed is not None and (not self.allowed or not all(isinstance(x, str) and x for x in self.allowed)):
            raise ValueError(f"allowed: a non-empty list of language codes, or null for all; got {self.allowed!r}")

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [c.name for c in LangIDScorer(self).columns()]


class LangIDScorer:
    """`lang` and `lang_score` (fastText lid.176); drops `lang_not_allowed` / `lang_low_score`."""

    Config = LangIDConfig

    def __init__(self, config: LangIDConfig):
        self.config = config
        self.lid = None

    def columns(self) -> list[Column]:
        return [Column("lang", pa.string(), axis="language"), Column("lang_score", pa.float32(), unit_score=True)]

    def thresholds(self) -> list[Threshold]:
        c = self.config
        allowed = [Threshold("lang", "lang_not_allowed", allowed=frozenset(c.allowed))] if c.allowed is not None else []
        return allowed + [Threshold("lang_score", "lang_low_score", below=c.min_score)]

    def load(self) -> None:
        from curate.scorers.langid import LangID

        self.lid = LangID(max_chars=self.config.max_chars)
        _ = self.lid.model

    def score(self, texts: list[str]) -> dict[str, list]:
        langs, scores = self.lid.predict(texts)
        return {"lang": langs, "lang_score": scores}


# 2: fastText predicts from the model projected onto its labels (scorers/ft.load_predictor):
# the same scores to float32 rounding, so shards scored before are scored again.
PREDICTOR_VERSION = 2


class LangIDStage(ScoreStage):
    scorer_cls, kind, version = LangIDScorer, "langid", PREDICTOR_VERSION


# --------------------------------------------------------------------------------------- quality
@dataclass
class QualityConfig(_ModelPath):
    """Config of the `quality` stage (a fastText classifier from `curate train-quality`)."""

    model: str = ""
    """The model file, e.g. `models/quality_ref.bin` (relative to the run directory)."""
    scorer: str | None = None
    """Score column suffix: the column is `quality_<scorer>`; default: from the model's file name
    (`quality_ref.bin` -> `ref`)."""
    bucket: bool = True
    """Also write `quality_bucket` (1 = lowest .. 5 = top 10% of characters) from the thresholds
    saved with the model. Only one quality stage per run may write it."""
    max_chars: int | None = None
    """Score only the first characters of each document (null = all, as at training time)."""
    min_score: float | None = None
    """Drop documents scoring below this (reason `quality_low_score`); null keeps all."""
    model_stamp: str | None = None
    """Content digest of the model file and its metadata, set when the run directory is bound
    (part of the config hash)."""

    def __post_init__(self):
        if not self.model:
            raise ValueError("model: give the model file, e.g. models/quality_ref.bin (train it with curate train-quality)")
        if self.scorer is None:
            stem = Path(self.model).stem
            self.scorer = stem.removeprefix("quality_") or stem
        if not self.scorer.replace("_", "").isalnum():
            raise ValueError(f"scorer: {self.scorer!r} must be letters, digits and '_' (it names a column)")
        if self.min_score is not None and not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score: must be in [0, 1] or null, got {self.min_score}")
        if self.max_chars is not None and self.max_chars < 1:
            raise ValueError(f"max_chars: must be >= 1 or null, got {self.max_chars}")

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [c.name for c in FastTextQualityScorer(self).columns()]


class FastTextQualityScorer:
    """`quality_<scorer>` = P(positive) of a fastText classifier and, optionally, `quality_bucket`
    from the thresholds saved with the model; drops `quality_low_score` below `min_score`."""

    Config = QualityConfig

    def __init__(self, config: QualityConfig):
        self.config = config
        self.model = None

    def columns(self) -> list[Column]:
        c = self.config
        return [Column(f"quality_{c.scorer}", pa.float32(), unit_score=True)] + \
            ([Column("quality_bucket", pa.int8(), axis="quality")] if c.bucket else [])

    def thresholds(self) -> list[Threshold]:
        lo = self.config.min_score
        return [Threshold(f"quality_{self.config.scorer}", "quality_low_score", below=lo)] if lo is not None else []

    def buckets(self) -> list[Buckets]:
        if not self.config.bucket:
            return []
        return [Buckets("quality_bucket", f"quality_{self.config.scorer}", tuple(self.model.thresholds))]

    def load(self) -> None:
        from curate.scorers.quality import QualityScorer as Model

        self.model = Model(self.config.model_file(), max_chars=self.config.max_chars)
        self.model.load()

    def score(self, texts: list[str]) -> dict:
        return {f"quality_{self.config.scorer}": self.model.scores(texts)}


class QualityStage(ScoreStage):
    scorer_cls, kind, version = FastTextQualityScorer, "quality", PREDICTOR_VERSION


# ---------------------------------------------------------------------------------------- domain
_FASTTEXT_MAGIC = (793712314).to_bytes(4, "little")

@dataclass
class DomainConfig(_ModelPath):
    """Config of the `domain` stage: rules, a fastText tagger, or rules then the tagger."""

    taxonomy: list[DomainRule] = field(default_factory=default_taxonomy)
    """Domains in priority order, each with its rules (see docs/annotate.md); the first match wins."""
    default: str = "web"
    """Domain of documents that no rule matches (in `rules` mode) or the tagger is unsure of."""
    mode: Literal["rules", "model", "rules_then_model"] = "rules"
    """`rules`: rules only; `model`: the fastText tagger only; `rules_then_model`: rules, and the
    tagger for documents no rule matches."""
    model: str | None = None
    """fastText tagger from `curate train-domain` (relative to the run directory)."""
    min_model_score: float = 0.0
    """Below this tagger probability a document gets `default` (and domain_score 0)."""
    max_chars: int | None = 20000
    """Characters the tagger reads per document (null = all)."""
    model_stamp: str | None = None
    """Content digest of the model file and its metadata, set when the run directory is bound
    (part of the config hash)."""

    def __post_init__(self):
        # Entries arrive as DomainRule: the config loader (records/typed.py) builds nested
        # dataclasses and names a bad entry's field, e.g. `stages[2].taxonomy[0].sorce`.
        names = [r.name for r in self.taxonomy]
        if len(set(names)) != len(names):
            raise ValueError(f"taxonomy: domain names must be unique, got {names}")
        if self.mode not in ("rules", "model", "rules_then_model"):
            raise ValueError(f"mode: {self.mode!r}; valid: rules, model, rules_then_model")
        if self.mode != "rules" and not self.model:
            raise ValueError(f"model: mode {self.mode} needs a tagger model (curate train-domain)")
        if not 0.0 <= self.min_model_score <= 1.0:
            raise ValueError(f"min_model_score: must be in [0, 1], got {self.min_model_score}")

    def bind_run_dir(self, run_dir: str | os.PathLike) -> None:
        super().bind_run_dir(run_dir)
        path = getattr(self, "_resolved", None)
        if path is not None and path.is_file():
            with open(path, "rb") as f:
                head = f.read(4)
            # fastText's binary format starts with its magic number (fasttext.cc, FASTTEXT_FILEFORMAT_MAGIC_INT32)
            if head != _FASTTEXT_MAGIC:
                raise ValueError(f"model: {self.model} is not a fastText model (it does not start with fastText's "
                                 f"file magic); train one with `curate train-domain`")

    def columns(self) -> list[str]:
        """Columns the stage adds (the run config refuses two stages adding the same one)."""
        return [c.name for c in DomainScorer(self).columns()]


class DomainScorer:
    """`domain` and `domain_score` (1.0 for a rule match, the tagger's probability otherwise)."""

    Config = DomainConfig

    def __init__(self, config: DomainConfig):
        self.config = config
        self.rules = None
        self.model = None
        self._counters: dict[str, int] = {}

    def columns(self) -> list[Column]:
        return [Column("domain", pa.string(), axis="domain"), Column("domain_score", pa.float32(), unit_score=True)]

    def reads(self) -> tuple[str, ...]:
        return ("source", "url")  # the rules' hints

    def load(self) -> None:
        from curate.scorers.domain import RuleTagger

        if self.config.mode != "model":
            self.rules = RuleTagger(self.config.taxonomy)
        if self.config.mode != "rules":
            from curate.scorers import ft

            self.model = ft.load_predictor(self.config.model_file())

    def counters(self) -> dict[str, int]:
        return self._counters

    def score(self, texts: list[str]) -> dict[str, list]:
        return self.score_rows(texts, {"source": [None] * len(texts), "url": [None] * len(texts)})

    def score_rows(self, texts: list[str], rows: Mapping[str, list]) -> dict[str, list]:
        from curate.scorers.domain import predict_domains

        cfg, n = self.config, len(texts)
        domains: list[str | None] = [None] * n
        scores = [0.0] * n
        detected: dict[str, int] = {}
        if cfg.mode != "model":
            for i, (t, s, u) in enumerate(zip(texts, rows["source"], rows["url"])):
                d = self.rules.tag_one(t, s, u)
                if d is not None:
                    domains[i], scores[i] = d, 1.0
                    how = self.rules.last_detector
                    if how:  # which detector decided: the report shows what each domain is made of
                        detected[f"detected_{how}"] = detected.get(f"detected_{how}", 0) + 1
        todo = [i for i in range(n) if domains[i] is None]
        counters = {"by_rule": n - len(todo), "by_model": 0, **detected}
        if self.model is not None and todo:
            labels, probs = predict_domains(self.model, [texts[i] for i in todo], cfg.max_chars)
            for i, lab, p in zip(todo, labels, probs):
                if p >= cfg.min_model_score:
                    domains[i], scores[i] = lab, p
                    counters["by_model"] += 1
        counters["by_default"] = sum(d is None for d in domains)
        self._counters = counters
        return {"domain": [d if d is not None else cfg.default for d in domains], "domain_score": scores}


class DomainStage(ScoreStage):
    scorer_cls, kind, version = DomainScorer, "domain", PREDICTOR_VERSION
