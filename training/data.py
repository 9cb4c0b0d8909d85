"""The plan-following sampler: which packed row of which group goes into each batch.

Within a phase, rows are handed out by Megatron-LM's greedy blending (`build_blending_indices`):
the next row comes from the group with the largest deficit `weight * (n + 1) - taken`, where `n`
rows have been taken in the phase so far. Every prefix of the phase therefore matches the weights
to within one row per group, not just the phase as a whole. Rows of a group are read in a
permutation seeded by (seed, group, epoch); a group that runs out wraps into a new epoch, up to
the plan's `max_epochs`. The position in the plan is counted in tokens (`seq_len` per row), so a
phase boundary inside a batch switches weights at the exact row where the plan says it should.

The sampler state (rows consumed, per-group cursors, per-phase counts) is a small dict that goes
into every checkpoint, so a resumed run draws exactly the rows an uninterrupted one would have.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.training.indexed import PackedRows
from curate.records.plan import Plan


@dataclass
class Batch:
    tokens: np.ndarray
    """(rows, seq_len + 1) token ids."""
    segs: np.ndarray
    """(rows, seq_len + 1) segment numbers; 0 = padding."""
    groups: list[str]
    """Group of each row."""
    phase: int
    """Phase index of the batch's first row."""


def needs_mask(segs: np.ndarray) -> bool:
    """True unless every row of `segs` is a single segment (then plain causal attention is exact).

    Decided on the CPU from the numpy rows, so the model's forward pass never has to inspect the
    segment tensor (a GPU sync per micro-batch and a torch.compile graph break).
    """
    return bool(segs.size) and not bool((segs == segs[:, :1]).all())


def load_groups(tokens_dir: Path, names: list[str]) -> dict[str, PackedRows]:
    """Open every group the plan names; a missing one is an error naming it."""
    tokens_dir = Path(tokens_dir)
    if not tokens_dir.is_dir():
        raise FileNotFoundError(f"{tokens_dir} does not exist: run `curate pack` before `curate train`")
    out = {}
    for g in names:
        if not (tokens_dir / g).is_dir():
            raise FileNotFoundError(f"group {g!r} is in plan.json but {tokens_dir / g} does not exist (re-run `curate pack`)")
        out[g] = PackedRows(tokens_dir / g)
    seq = {g: r.seq_len for g, r in out.items()}
    if len(set(seq.values())) > 1:
        raise ValueError(f"token groups were packed with different seq_len: {seq}")
    return out


class PlanSampler:
    """Deterministic, resumable row sampler that follows the plan's phases."""

    def __init__(self, plan: Plan, groups: dict[str, PackedRows], seed: int = 0,
                 holdout_rows: int = 8) -> None:
        self.plan, self.groups, self.seed = plan, groups, int(seed)
        self.seq_len = self.plan.seq_len
        self.phases = self.plan.phases
        self.names = [g.name for g in self.plan.groups if g.name in groups] or sorted(groups)
        self.max_epochs = {g.name: float(g.max_epochs) for g in self.plan.groups}
        for g, r in groups.items():
            if r.seq_len != self.seq_len:
                raise ValueError(f"group {g!r} was packed with seq_len {r.seq_len}, plan.json says {self.seq_len}: re-run `curate pack`")
        # The last rows of each group are held out for evaluation (at most a tenth of the group).
        self.n_holdout = {g: min(int(holdout_rows), r.n_rows // 10) for g, r in groups.items()}
        self.n_train = {g: r.n_rows - self.n_holdout[g] for g, r in groups.items()}
        for ph in self.phases:
            for g, w in ph.weights.items():
                if w > 0 and self.n_train.get(g, 0) <= 0:
                    raise ValueError(f"phase {ph.name!r} gives group {g!r} weight {w} but it has no packed rows "
                                     f"(no document of the run fell into it when it was packed): re-plan, or check "
                                     f"the group's predicate")
        self._perm_cache: dict[tuple[str, int], np.ndarray] = {}
        self.rows_done = 0
        self.cursor = {g: 0 for g in groups}
        self.taken = [{g: 0 for g in ph.weights} for ph in self.phases]

    # -- plan geometry ---------------------------------------------------------------------
    @property
    def total_rows(self) -> int:
        return self.phases[-1].end_token // self.seq_len

    def phase_at(self, token: int) -> int:
        for i, ph in enumerate(self.phases):
            if ph.start_token <= token < ph.end_token:
                return i
        raise IndexError(f"token {token} is past the plan's end ({self.phases[-1].end_token})")

    def planned_rows(self) -> dict[str, int]:
        """Upper bound on the rows each group will supply over the whole plan (for the epoch check)."""
        need = {g: 0 for g in self.groups}
        for ph in self.phases:
            n = math.ceil((ph.end_token - ph.start_token) / self.seq_len)
            for g, w in ph.weights.items():
                if w > 0:
                    need[g] += math.ceil(w * n) + 1
        return need

    def check_epochs(self) -> None:
        """Refuse a plan that would cycle a group's training rows more than its `max_epochs`.

        The planner caps epochs over the group's tokens as the catalog counts them; the rows packed
        for training are fewer by the held-out slices (pack's eval fraction, this sampler's own
        holdout rows) and packing's boundary losses. A plan whose cap binds would then fail here
        by exactly those rows, so the allowance counts the plan's own rows where they exceed the
        packed ones by no more than a quarter (more than that: the plan was made on other data).
        `planned_rows` rounds each phase up and adds a row, hence two rows of slack per phase."""
        avail = {g.name: g.available_tokens / self.seq_len for g in self.plan.groups}
        for g, need in self.planned_rows().items():
            rows = self.n_train[g]
            counted = avail.get(g, rows)
            base = counted if rows <= counted <= 1.25 * rows else rows
            allowed = self.max_epochs.get(g, math.inf) * base + 2 * len(self.phases)
            if need > allowed:
                raise ValueError(
                    f"group {g!r}: the plan needs about {need} rows but {self.n_train[g]} are packed for training and "
                    f"max_epochs is {self.max_epochs[g]:g}; add data, raise max_epochs, or lower its weight")

    # -- drawing rows ----------------------------------------------------------------------
    def _perm(self, g: str, epoch: int) -> np.ndarray:
        key = (g, epoch)
        if key not in self._perm_cache:
            gi = sorted(self.groups).index(g)
            rng = np.random.default_rng([self.seed, gi, epoch])
            self._perm_cache = {k: v for k, v in self._perm_cache.items() if k[0] != g}
            self._perm_cache[key] = rng.permutation(self.n_train[g])
        return self._perm_cache[key]

    def _pick_group(self, p: int) -> str:
        weights = self.phases[p].weights
        taken = self.taken[p]
        n = sum(taken.values())
        best, best_def = None, -math.inf
        for g in self.names:
            w = weights.get(g, 0.0)
            if w <= 0:
                continue
            deficit = w * (n + 1) - taken[g]
            if deficit > best_def:
                best, best_def = g, deficit
        assert best is not None, f"phase {p} has no group with positive weight"
        return best

    def next_indices(self, n_rows: int) -> tuple[list[tuple[str, int]], int]:
        """The next `n_rows` (group, row) pairs and the phase of the first; advances the state."""
        out, first_phase = [], None
        for _ in range(n_rows):
            p = self.phase_at(self.rows_done * self.seq_len)
            first_phase = p if first_phase is None else first_phase
            g = self._pick_group(p)
            c = self.cursor[g]
            out.append((g, int(self._perm(g, c // self.n_train[g])[c % self.n_train[g]])))
            self.cursor[g] = c + 1
            self.taken[p][g] += 1
            self.rows_done += 1
        return out, int(first_phase)

    def read(self, picks: list[tuple[str, int]], phase: int) -> Batch:
        """Read the rows of `picks` from the memory maps (safe to run in a background thread)."""
        width = self.seq_len + 1
        toks = np.empty((len(picks), width), dtype=np.int64)
        segs = np.empty((len(picks), width), dtype=np.int32)
        for i, (g, r) in enumerate(picks):
            t, s = self.groups[g].get(np.array([r]))
            toks[i], segs[i] = t[0], s[0]
        return Batch(toks, segs, [g for g, _ in picks], phase)

    def next_batch(self, n_rows: int) -> Batch:
        picks, phase = self.next_indices(n_rows)
        return self.read(picks, phase)

    def holdout(self, g: str) -> tuple[np.ndarray, np.ndarray]:
        """The held-out rows of group `g` (its last rows)."""
        r = self.groups[g]
        return r.get(np.arange(r.n_rows - self.n_holdout[g], r.n_rows))

    # -- state and reporting ---------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"rows_done": self.rows_done, "cursor": dict(self.cursor), "taken": [dict(t) for t in self.taken],
                "seed": self.seed, "n_train": dict(self.n_train)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed or state["n_train"] != self.n_train:
            raise ValueError("sampler state was saved for a different seed, holdout_rows or token files; "
                             "resume with the same tokens/, seed and holdout_rows, or start a fresh --out")
        self.rows_done = int(state["rows_done"])
        self.cursor = {g: int(c) for g, c in state["cursor"].items()}
        self.taken = [{g: int(c) for g, c in t.items()} for t in state["taken"]]

    def realised(self, state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Per phase: planned weights vs the fraction of rows drawn (as of `state`, default now)."""
        out = []
        for ph, taken in zip(self.phases, (state or self.state_dict())["taken"]):
            n = sum(taken.values())
            out.append({"phase": ph.name, "rows": n,
                        "planned": {g: float(w) for g, w in ph.weights.items()},
                        "realised": {g: (c / n if n else 0.0) for g, c in taken.items()}})
        return out


def supply_table(sampler: PlanSampler) -> str:
    """The table printed before training: tokens requested vs available per group."""
    need = sampler.planned_rows()
    head = f"{'group':<16}{'requested':>14}{'available':>14}{'packed rows':>13}{'epochs':>9}{'max':>7}"
    lines = [head, "-" * len(head)]
    for g in sampler.plan.groups:
        if g.name not in sampler.groups:
            continue
        rows = sampler.n_train[g.name]
        ep = need[g.name] / rows if rows else math.inf
        lines.append(f"{g.name:<16}{g.requested_tokens:>14,}{g.available_tokens:>14,}"
                     f"{rows:>13,}{ep:>9.2f}{g.max_epochs:>7g}")
    return "\n".join(lines)
