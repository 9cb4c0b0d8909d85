"""Heuristic thresholds that fit each group of documents: quantiles of a signal over the group.

Gopher's absolute thresholds were set for English web pages (Rae et al. 2021); a changelog, a
man page or a Japanese manual is unusual by those numbers and ordinary for its own kind.
FineWeb-2 (Penedo et al. 2025, https://arxiv.org/abs/2506.20920) derives each language's
thresholds from the distribution of the filter's signal in that language. Here a filter
parameter may be written `{quantile: q}`: for each group (domain x language) the threshold is
the value of the parameter's signal (an `hs_*` column, scorers/heuristic_rules.py) that keeps
the share `q` of the group on that signal, so only the group's own tail (`1 - q` at most) goes.

The quantiles come from a deterministic sample of the run (`sample_signals`: per group, the
documents with the smallest salted hash of their id), computed by the run's driver before the
stage's shards (stages/filter/heuristics_prepare.py); the resolved table travels in the
stage's config (`HeuristicsConfig.resolved`), so the decision stays per document and a changed
sample reruns the stage.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Iterable

# filter -> parameter -> (signal, side): `max` rules drop above the threshold (it is the group's
# q-quantile), `min` rules drop below it (the (1 - q)-quantile).
QUANTILE_SIGNALS: dict[str, dict[str, tuple[str, str]]] = {
    "gopher_quality": {
        "min_doc_words": ("hs_words", "min"), "max_doc_words": ("hs_words", "max"),
        "min_avg_word_length": ("hs_mean_word_len", "min"), "max_avg_word_length": ("hs_mean_word_len", "max"),
        "max_non_alpha_words_ratio": ("hs_alpha_ratio", "min"), "min_stop_words": ("hs_stop_words", "min"),
    },
    "gopher_repetition": {"dup_para_frac": ("hs_dup_para_frac", "max"), "dup_line_frac": ("hs_dup_line_frac", "max")},
    "fineweb_quality": {"line_punct_thr": ("hs_line_punct_ratio", "min"),
                        "short_line_thr": ("hs_short_line_ratio", "max")},
    "c4_quality": {},
}
ANY = "*"


@dataclass(frozen=True)
class Quantile:
    """A threshold written `{quantile: q, fallback: v, bound: v}` for one filter parameter."""

    param: str
    signal: str
    side: str
    q: float
    fallback: float | None = None
    """Used where the group and its domain are both too small for a quantile (null: rule off)."""
    bound: float | None = None
    """The threshold is never stricter than this absolute value (null: no bound)."""

    @property
    def level(self) -> float:
        """The quantile level of the signal that keeps the share `q`."""
        return round(self.q if self.side == "max" else 1.0 - self.q, 6)

    def threshold(self, value: float | None) -> float | None:
        if value is None:
            return self.fallback
        if self.bound is None:
            return value
        return max(value, self.bound) if self.side == "max" else min(value, self.bound)


def split_quantiles(name: str, params: dict, field: str) -> tuple[dict, list[Quantile]]:
    """`params` without its `{quantile: ...}` entries, and those entries; a ValueError naming the
    field for a parameter without a signal, a level outside (0, 1) or an unknown key."""
    plain, quantiles = {}, []
    for key, value in params.items():
        if not isinstance(value, dict):
            plain[key] = value
            continue
        where = f"{field}.{key}"
        signals = QUANTILE_SIGNALS.get(name, {})
        if key not in signals:
            raise ValueError(f"{where}: {name} has no signal for a quantile threshold; quantiles work for: "
                             f"{', '.join(signals) or 'none of its parameters'}")
        unknown = set(value) - {"quantile", "fallback", "bound"}
        if unknown or "quantile" not in value:
            raise ValueError(f"{where}: expected {{quantile: q, fallback: v, bound: v}} (fallback, bound optional), "
                             f"got {value!r}")
        q = value["quantile"]
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < q < 1.0:
            raise ValueError(f"{where}.quantile: the share of the group to keep, in (0, 1) exclusive; got {q!r}")
        for extra in ("fallback", "bound"):
            v = value.get(extra)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise ValueError(f"{where}.{extra}: a number or null, got {v!r}")
        signal, side = signals[key]
        quantiles.append(Quantile(key, signal, side, float(q), value.get("fallback"), value.get("bound")))
    return plain, quantiles


def group_key(domain: str | None, lang: str | None) -> str:
    return f"{domain if domain is not None else '-'}|{lang if lang is not None else 'und'}"


def domain_key(group: str) -> str:
    return f"{group.split('|', 1)[0]}|{ANY}"


def sample_key(doc_id: str, salt: str = "quantiles") -> bytes:
    """The order the sample is drawn in: a salted hash of the id (independent of shard order)."""
    return hashlib.blake2b(f"{salt}:{doc_id}".encode(), digest_size=8).digest()


def resolve(values: dict[str, dict[str, list[float]]], needed: Iterable[tuple[str, float]],
            min_group_docs: int) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """Per group and per domain (`domain|*`), each needed `signal@level` quantile, from sampled
    signal values `values[group][signal]`; groups with fewer than `min_group_docs` sampled
    documents are left out (the stage then uses the domain's, else the fallback)."""
    import numpy as np

    needed = sorted(set(needed))
    pooled: dict[str, dict[str, list[float]]] = {}
    for group, by_signal in values.items():
        for signal, xs in by_signal.items():
            pooled.setdefault(domain_key(group), {}).setdefault(signal, []).extend(xs)
    table: dict[str, dict[str, float]] = {}
    sizes: dict[str, int] = {}
    for group, by_signal in sorted({**values, **pooled}.items()):
        n = len(next(iter(by_signal.values()), []))
        sizes[group] = n
        if n < min_group_docs:
            continue
        table[group] = {f"{s}@{lvl}": float(np.quantile(np.asarray(by_signal[s], dtype=np.float64), lvl))
                        for s, lvl in needed}
    return table, sizes


class Thresholds:
    """The resolved table, answering a group's threshold for a quantile parameter."""

    def __init__(self, resolved: dict[str, Any] | None):
        self.table: dict[str, dict[str, float]] = (resolved or {}).get("groups", {})

    def value(self, group: str, quantile: Quantile) -> float | None:
        key = f"{quantile.signal}@{quantile.level}"
        for where in (group, domain_key(group)):
            found = self.table.get(where, {}).get(key)
            if found is not None:
                return quantile.threshold(found)
        return quantile.fallback

    def source(self, group: str) -> str:
        """Where a group's thresholds come from: itself, its domain, or the fallbacks."""
        if group in self.table:
            return "group"
        return "domain" if domain_key(group) in self.table else "fallback"
