"""The miniature's config (`configs/miniature.yaml`): typed dataclasses, errors that name the field."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.records.typed import build

ARMS = {
    "a": "continue on the pretraining mix",
    "b": "reuse recipe",
    "c": "reuse, target picked by classifier",
    "d": "reuse, same amount picked at random",
    "e": "reuse, re-warmed LR",
    "f": "mixture from curate search",
    "g": "reuse, target picked by PreSelect",
    "h": "target upweighted, no QA phase",
}


@dataclass
class CorpusConfig:
    builder: str | None = "debian-faq"
    """`debian-faq`: build `dir`/target.jsonl, general.jsonl and qa.jsonl from this machine's
    documentation (pipeline/commands/corpus_faq.py); null: `inputs` and `qa.path` exist already."""
    dir: str = "data/miniature"
    """Where the builder writes (skipped when its three files are there)."""
    general_mb: float = 8.0
    """Size cap of the general pool the builder writes."""
    target_mb: float = 2.0
    """Size cap of the target documents the builder writes."""

    def __post_init__(self):
        if self.builder not in (None, "debian-faq"):
            raise ValueError(f"builder: got {self.builder!r}; valid: debian-faq or null")


@dataclass
class QAConfig:
    path: str = "data/miniature/qa.jsonl"
    """JSONL of `{"question", "answer", "choices"?, "id"?}`."""
    held_out_fraction: float = 0.3
    """Share of pairs held out for evaluation only, by a hash of the pair's id (or its question)."""
    salt: str = "miniature"
    """Salt of that hash: another salt, another split."""
    source: str = "qa"
    """`source` of the training pairs as documents (`Question: ...\\nAnswer: ...`)."""

    def __post_init__(self):
        if not 0 < self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction: must be in (0, 1), got {self.held_out_fraction}")


@dataclass
class SelectionConfig:
    positive_sql: str | None = None
    """Positives of the fastText classifier (`curate train-quality --positive-sql`); null: the
    training QA pairs, as DCLM trains on instruction data."""
    epoch: int = 25
    """fastText epochs (a few hundred positives need more than the default 5)."""
    lr: float = 0.5
    """fastText learning rate."""
    mass_ratio: float = 1.0
    """Characters picked for arms (c) and (d), as a multiple of the target domain's characters."""
    salt: str = "random"
    """Salt of arm (d)'s random pick."""


@dataclass
class SearchConfig:
    """Arm (f): `curate search` (RegMix) from base 0 over every group of the pack."""

    proxies: int = 8
    """Proxy runs (at least 8)."""
    proxy_fraction: float = 0.2
    """Each proxy's tokens as a share of an arm's (at most a fifth)."""
    epsilon: float = 0.0
    """The general set's predicted BPB may rise by this share over the natural mixture's."""

    def __post_init__(self):
        if self.proxies < 8:
            raise ValueError(f"proxies: at least 8, got {self.proxies}")
        if not 0 < self.proxy_fraction <= 0.2:
            raise ValueError(f"proxy_fraction: must be in (0, 0.2], got {self.proxy_fraction}")


@dataclass
class PreSelectConfig:
    """Arm (g): PreSelect (Shum et al. 2025) with a ladder of models of different sizes."""

    rungs: list[int] = field(default_factory=lambda: [32, 48])
    """Widths of the ladder's models besides the base (its depth); the base is the top rung."""
    tokens_ratio: float = 0.5
    """Each rung's pretraining tokens as a share of the base's (same general pool)."""
    sample: int = 2000
    """Pool documents scored by every rung (`curate train-preselect --sample`)."""
    max_chars: int = 4000
    """Characters of each document scored (its start; the scoring is documents x rungs)."""
    length_bins: int = 10
    """Length bins the labels are balanced over (`curate train-preselect --length-bins`)."""
    min_positives: int = 20
    """Positives of the fastText labels (fewer documents reach S = 1 on a small pool)."""

    def __post_init__(self):
        if len(self.rungs) < 2:
            raise ValueError(f"rungs: at least 2 besides the base (a ladder of >= 3), got {self.rungs}")


@dataclass
class ScaleConfig:
    """A second scale: a larger model from its own bases, more tokens (DataDecide's question)."""

    model: dict[str, Any] = field(default_factory=lambda: {"hidden_size": 128, "layers": 8})
    """Fields of `model` replaced at that scale."""
    token_factor: float = 2.0
    """Base and arm tokens x this."""
    arms: list[str] = field(default_factory=lambda: ["a", "b", "c", "f", "g"])
    """The arms run at this scale (those not in `arms` are left out); it must hold each of a, b, c,
    f, g that `arms` has. The decision accuracy is over the pairs of arms both scales ran."""
    seeds: int | None = None
    """Data-order seeds per arm and base at this scale (null: `seeds`); every base still runs, so
    each paired test has bases x seeds pairs (1 seed, 2 bases: 2 pairs, the base's variance only)."""


@dataclass
class ModelConfig:
    size: str = "tiny"
    """A `curate init-model` size (tiny, 125m, 350m)."""
    vocab_size: int = 4096
    """sentencepiece vocabulary trained by `curate pack`."""
    seq_len: int = 256
    """Training context; evaluation windows are this long too."""
    hidden_size: int | None = None
    """Width instead of `size`'s (with `layers`: a shape between the named sizes, e.g. a second scale)."""
    layers: int | None = None
    """Decoder blocks instead of `size`'s."""

    def shape(self) -> dict[str, int]:
        """The decoder's shape fields (`training.model.SIZES[size]`, with the overrides)."""
        from curate.training.model import SIZES

        if self.size not in SIZES:
            raise ValueError(f"size: got {self.size!r}; valid: {', '.join(SIZES)}")
        d = dict(SIZES[self.size])
        if self.hidden_size:
            heads = max(2, self.hidden_size // 32)
            d.update(hidden_size=self.hidden_size, intermediate_size=self.hidden_size * 11 // 4,
                     num_attention_heads=heads, num_key_value_heads=max(1, heads // 2))
        if self.layers:
            d["num_hidden_layers"] = self.layers
        return d


@dataclass
class TrainConfig:
    base_tokens: float = 3.0e6
    """Tokens of base pretraining on the general pool."""
    cpt_tokens: float = 8.0e5
    """Continued-pretraining tokens of every arm (equal across arms)."""
    batch_rows: int = 8
    """Rows of seq_len per optimizer step."""
    base_lr: float = 3.0e-3
    """Peak LR of base pretraining (cosine, after warmup)."""
    base_lr_end_ratio: float = 0.1
    """Base pretraining ends at base_lr x this: the recipe's start LR eta0 (Parmar et al.)."""
    base_warmup_fraction: float = 0.02
    """Warmup of base pretraining."""
    lr_end_ratio: float = 0.01
    """Continued pretraining decays (cosine) from eta0 to eta0 x this."""
    switch_lr_ratio: float = 0.2
    """Reuse recipe: the QA blend starts at LR = eta0 x this."""
    qa_share: float = 0.12
    """Reuse recipe: the QA pairs' share of the QA blend's tokens (Parmar et al.: ~12%)."""
    qa_max_epochs: float | None = None
    """Reuse recipe: most passes over the QA pairs (null: max_epochs)."""
    target_weight: float = 2.0
    """Reuse recipe: upweighting of the target role in the general blend."""
    rewarm_lr: float | None = None
    """Arm (e): the LR it warms up to; null: base_lr."""
    rewarm_warmup_fraction: float = 0.01
    """Arm (e): warmup share of its tokens (1%, as Ibrahim et al. 2024 and Gupta et al. 2023)."""
    rewarm_lr_end_ratio: float = 0.1
    """Arm (e): its cosine decays to rewarm_lr x this (a tenth of the peak, as those papers)."""
    max_epochs: float = 8.0
    """Most passes over any group in a plan."""
    log_every: int = 5
    """Loss-curve resolution (steps per metrics line)."""
    checkpoint_every: int = 50
    """Steps between checkpoints: what a killed run loses."""
    device: str = "auto"
    """auto, cpu or cuda."""


@dataclass
class MiniatureConfig:
    out: str = "runs/miniature"
    """Output folder: the run, the base model, the arms, the report."""
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    inputs: list[str] = field(default_factory=lambda: ["data/miniature/general.jsonl", "data/miniature/target.jsonl"])
    """JSONL / Parquet corpora (files, folders or globs) read by `curate run`."""
    target: str = "source IN ('debian-faq', 'debian-readme')"
    """The target domain: a SQL predicate over the catalog's `docs`."""
    qa: QAConfig = field(default_factory=QAConfig)
    stages: list[dict] = field(default_factory=lambda: [{"kind": "exact_dedup"}])
    """`curate run` stages before decontamination (which the miniature appends)."""
    decontaminate_n: int = 13
    """Words per n-gram of the decontamination against the held-out QA answers."""
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seeds: int = 3
    """Data-order seeds per arm and base (bases x seeds >= 2: the pairs of each paired test)."""
    bases: int = 2
    """Bases pretrained with different seeds; every arm x seed runs from each."""
    scales: int = 1
    """1: the configured model; 2: also `second_scale` (`--scales 2`), and the decision accuracy."""
    second_scale: ScaleConfig = field(default_factory=ScaleConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    preselect: PreSelectConfig = field(default_factory=PreSelectConfig)
    mc_choices: int = 4
    """Choices per held-out QA item without its own: the answer and other held-out answers."""
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    eval_fraction: float = 0.05
    """Share of target and general documents held out for BPB (by a hash of the id)."""
    eval_max_docs: int = 200
    """At most this many documents per held-out set."""
    workers: int | None = None
    """Ray CPUs (null: all cores)."""
    gpu: dict[str, Any] = field(default_factory=dict)
    """Overrides applied with `--gpu` (any fields above, nested)."""

    def __post_init__(self):
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"arms: unknown {bad}; valid: {', '.join(ARMS)}")
        if "a" not in self.arms:
            raise ValueError("arms: must include 'a' (every difference is taken against it)")
        if self.bases < 1 or self.scales not in (1, 2):
            raise ValueError(f"bases >= 1 and scales 1 or 2, got bases={self.bases}, scales={self.scales}")
        if self.seeds < 1 or self.seeds * self.bases < 2:
            raise ValueError(f"seeds: need at least 2 (base, seed) pairs for a paired test, got seeds={self.seeds} "
                             f"x bases={self.bases}")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction: must be in (0, 1), got {self.eval_fraction}")
        s2 = self.second_scale
        need = [a for a in ("a", "b", "c", "f", "g") if a in self.arms and a not in s2.arms]
        if need or set(s2.arms) - set(ARMS):
            raise ValueError(f"second_scale.arms: must hold {need} (each of a, b, c, f, g that `arms` has) and "
                             f"only arms of {', '.join(ARMS)}; got {s2.arms}")
        if s2.seeds is not None and (s2.seeds < 1 or s2.seeds * self.bases < 2):
            raise ValueError(f"second_scale.seeds: need at least 2 (base, seed) pairs for a paired test, got "
                             f"seeds={s2.seeds} x bases={self.bases}")


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load(path: str | Path | None, overrides: dict | None = None, gpu: bool = False) -> MiniatureConfig:
    import yaml

    data = (yaml.safe_load(Path(path).read_text()) or {}) if path else {}
    data = merge(data, overrides or {})
    if gpu:
        data = merge(data, data.get("gpu") or {})
    return build(MiniatureConfig, data, "")
