"""The two selection methods that need trained models before their arm: (g) PreSelect with a ladder
of models of different sizes, and (f) the mixture `curate search` finds from proxies of the base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bench.miniature import arms as A
from bench.miniature.config import MiniatureConfig, ModelConfig


def ladder(cfg: MiniatureConfig, out: Path, base_recipe: dict, base: Path, echo) -> list[Path]:
    """PreSelect's ladder (Shum et al. 2025, arXiv:2503.00808, section 3: models of different sizes
    pretrained on the same data): a model of each `preselect.rungs` width and the base's depth,
    pretrained on the general pool as the base is (seed 0, `tokens_ratio` of its tokens), smallest
    first; the base (base 0) is the top rung. Rungs close to each other disagree on some documents,
    which is what predictive strength needs: a ladder whose every model beats the one below on
    every document labels every document alike."""
    folders = []
    for w in sorted(cfg.preselect.rungs):
        shape = ModelConfig(size=cfg.model.size, hidden_size=w, layers=cfg.model.layers).shape()
        folder = out / "ladder" / f"w{w}"
        if not (folder / "model" / "config.json").is_file():
            A.pretrain_base(cfg, out, base_recipe, echo, folder=folder, seed=0, shape=shape,
                            tokens=cfg.train.base_tokens * cfg.preselect.tokens_ratio)
        folders.append(folder / "model")
    return [*folders, base]


def train_preselect(cfg: MiniatureConfig, out: Path, rungs: list[Path], qa: dict, held_where: list[str],
                    name: str) -> dict:
    """`curate train-preselect`'s function: the ladder's performance is minus its bits per byte on
    the training QA pairs (the target ability, as (c)'s positives are; never a held-out set), each
    sampled pool document's bits per byte under every rung ranks it, fastText learns the labels.
    The held-out documents are never sampled."""
    from curate.pipeline.commands.preselect import train_preselect as run
    from curate.pipeline.errors import CurateError

    held = " OR ".join(f"({w.split('=', 1)[1]})" for w in held_where)
    sql = f"SELECT id, text FROM docs WHERE source <> '{cfg.qa.source}' AND NOT ({held})"
    p, block = cfg.preselect, cfg.model.seq_len
    try:
        meta = run(str(out / "run"), [str(r) for r in rungs], target_set=[qa["train_path"]], name=name,
                   sample=p.sample, sql=sql, min_positives=p.min_positives, length_bins=p.length_bins,
                   block=block, stride=block * 7 // 8, max_chars=p.max_chars, batch_tokens=block * cfg.train.batch_rows,
                   device="cpu" if cfg.train.device == "cpu" else "auto")
    except CurateError as e:
        raise CurateError(f"preselect: {e} (a ladder that ranks most documents alike gives too few labels: "
                          "rungs closer to the base's width (preselect.rungs), more documents (preselect.sample), "
                          "fewer preselect.length_bins or preselect.min_positives)") from None
    keep = ("model", "performance", "ladder", "ladder_mean_bpb", "labels", "heldout", "warnings", "timings")
    return {k: meta[k] for k in keep if k in meta}


def search_space_recipe(cfg: MiniatureConfig, groups: list[dict]) -> dict:
    """What the search mixes: every group of the pack, natural weights, (a)'s schedule."""
    a = A.recipes(cfg, groups)["a"]  # (a) is in every config
    return {**a, "name": "f-space", "groups": groups}


def search(cfg: MiniatureConfig, out: Path, groups: list[dict], base: Path, executor: Any, echo) -> dict:
    """`curate search` (RegMix) from base 0: `search.proxies` proxies of `proxy_fraction` x an arm's
    tokens, fitted on the *dev* held-out slices (target_dev, general_dev: never the sets the arms
    are scored on), the general set kept within `epsilon`. Returns the found recipe and fit quality."""
    from curate.search.driver import search as run_search

    space = A.make_plan(cfg, out, "f-space", search_space_recipe(cfg, groups), cfg.train.cpt_tokens)
    r = run_search(out / "run", base, "target_dev", keep=["general_dev"], proxies=cfg.search.proxies,
                   proxy_tokens=int(cfg.train.cpt_tokens * cfg.search.proxy_fraction), epsilon=cfg.search.epsilon,
                   plan=out / "plans" / "f-space.json", executor=executor, eval_max_docs=cfg.eval_max_docs,
                   target_tokens=space["total_tokens"], echo=echo)
    if not r.get("complete"):
        from curate.pipeline.errors import CurateError

        raise CurateError("search: proxies unfinished; run the miniature again to resume")
    recipe = yaml.safe_load(Path(r["recipe"]).read_text())
    fit = {k: {"spearman": v[r["model"]]["spearman"], "mae": v[r["model"]]["mae"]} for k, v in r["fit"].items()}
    return {"recipe": recipe, "weights": r["found"]["weights"], "fit": fit, "model": r["model"],
            "proxies": len(r["proxies"]), "proxy_tokens": r["proxy_tokens"], "notes": r["notes"]}
