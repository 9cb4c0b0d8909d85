"""`curate train --ray N`: the same `training.loop.train` on N Ray Train workers (TorchTrainer).

Ray Train creates the process group (gloo on CPU, nccl on GPU) and sets the rank variables;
`distributed.setup()` then joins it instead of creating one. Only rank 0 prints and writes.

A lost worker (its process or node) fails the group; Ray Train's `FailureConfig(max_failures)`
starts a new group, whose `train()` resumes from the latest checkpoint in the output directory
(the resume is exact: docs/training.md), so the model equals an uninterrupted run's.
"""

from __future__ import annotations

import os
from typing import Any


def _worker(cfg: dict[str, Any]) -> None:
    import ray.train

    from curate.training.config import TrainConfig
    from curate.training.loop import train

    kwargs = dict(cfg)
    kwargs["config"] = TrainConfig(**kwargs["config"])
    result = train(**kwargs)
    ray.train.report({k: v for k, v in result.items() if isinstance(v, (int, float))})


def launch_ray(train_kwargs: dict[str, Any], num_workers: int, use_gpu: bool, address: str | None = None,
               max_failures: int = 3) -> Any:
    """Run `training.loop.train(**train_kwargs)` on `num_workers` Ray Train workers, restarting the
    group from the latest checkpoint up to `max_failures` times when a worker is lost.

    Paths in `train_kwargs` must be visible to every worker (shared storage on a cluster).
    """
    try:
        import ray
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as e:
        raise ImportError("Ray Train is needed for --ray: pip install 'ray[train]'") from e
    if not ray.is_initialized():
        ray.init(address=address or os.environ.get("RAY_ADDRESS"))
    kwargs = dict(train_kwargs)
    kwargs["config"] = kwargs["config"].to_dict()
    out = str(kwargs.get("out_dir") or os.path.join(str(kwargs["run_dir"]), "train"))
    trainer = TorchTrainer(
        _worker,
        train_loop_config=kwargs,
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
        run_config=RunConfig(name="curate-train", storage_path=os.path.abspath(os.path.join(out, "ray")),
                             failure_config=FailureConfig(max_failures=max_failures)),
    )
    return trainer.fit()
