"""The one place that imports ray: it maps stages onto Ray actors and tasks.

- `ray_session()` attaches to a cluster (`address` or `RAY_ADDRESS`) or starts an embedded local
  Ray, and reuses one that is already initialised (tests share one per session).
- `RayExecutor.map(fn, items)` runs a plain function as Ray tasks, at most `workers` in flight,
  with a progress bar; results come back in input order.
- `RayExecutor.map_actors(make, method, items)` builds `workers` actors, each constructing its
  worker object once (so a model loads once per actor, docs/internals.md), and feeds them items.
- Both implement `stages.base.Executor`: with `size`, small items travel several to a task
  (each still writes its own output and marker); a stage's resource hint becomes actor options.

Data does not travel through the object store: tasks receive paths and write their own shards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import ray

from curate.pipeline.running.progress import progress
from curate.stages.base import TASK_BYTES, Resources, group_by_size


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray, attach to `address`, or start (and later stop) a local one."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=True)
    if address:
        # A cluster's nodes install the project themselves (ray_cluster.yaml), and `ray job
        # submit --working-dir` sets the job's own runtime env: leave it alone.
        ray.init(address=address, **kwargs)
    else:
        # "local" always starts a new embedded instance; plain ray.init() would attach to any
        # cluster another process on this machine started with `ray start`. Local workers get
        # the driver's sys.path, so code the driver can import (a script's or a test's own
        # module) imports in them too.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(),
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}, **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


@ray.remote(num_cpus=1)
def _call_many(fn: Callable, items: list) -> list:
    return [fn(item) for item in items]


@ray.remote(num_cpus=1)
class _Worker:
    def __init__(self, make: Callable[[], Any]):
        self.obj = make()

    def call_many(self, method: str, items: list) -> list:
        call = getattr(self.obj, method)
        return [call(item) for item in items]

    def ping(self) -> int:
        return os.getpid()


def actor_options(hint: Resources | None) -> tuple[dict, int]:
    """Ray actor options for a stage's resource hint, and how many such actors the cluster holds.
    A GPU is asked for only when the cluster has one (the stage then runs on CPU workers)."""
    hint = hint or {}
    options: dict[str, Any] = {}
    if hint.get("num_cpus") is not None:
        options["num_cpus"] = float(hint["num_cpus"])
    if hint.get("memory"):
        options["memory"] = int(hint["memory"])
    gpus = float(hint.get("num_gpus") or 0)
    have = float(ray.cluster_resources().get("GPU", 0))
    if gpus <= 0 or have <= 0:
        return options, sys.maxsize
    return {**options, "num_gpus": gpus}, max(1, int(have // gpus))


def _groups(items: Sequence, workers: int, cost: Callable[[Any], float] | None,
            size: Callable[[Any], int] | None, task_bytes: int) -> list[list[int]]:
    """Item indices per task, costliest task first (LPT scheduling, so no worker is left with a
    big shard while the others idle at the end). With `size`, small items share a task."""
    if size is not None and task_bytes > 0:
        groups = group_by_size(items, size, workers, task_bytes)
    else:
        groups = [[i] for i in range(len(items))]
    if cost is not None:
        groups.sort(key=lambda g: -sum(cost(items[i]) for i in g))
    return groups


def _progress(total: int, desc: str):
    # Bars on a terminal, a periodic line in logs (ray job submit, CI); TQDM_DISABLE=1 silences both.
    return progress(total, desc)


class RayExecutor:
    """`stages.base.Executor` on Ray. `task_bytes`: what a task of small items should read
    (0: one item per task, as before grouping; bench/bench_small_shards.py compares)."""

    def __init__(self, workers: int | None = None, task_bytes: int = TASK_BYTES):
        self.workers = max(1, workers or cluster_cpus())
        self.task_bytes = task_bytes

    def map(self, fn: Callable, items: Sequence, desc: str = "", cost: Callable[[Any], float] | None = None,
            size: Callable[[Any], int] | None = None) -> list:
        groups = _groups(items, self.workers, cost, size, self.task_bytes)
        results: list = [None] * len(items)
        running: dict = {}
        todo = list(groups)
        with _progress(len(items), desc) as bar:
            while todo or running:
                while todo and len(running) < self.workers:
                    g = todo.pop(0)
                    running[_call_many.remote(fn, [items[i] for i in g])] = g
                done, _ = ray.wait(list(running), num_returns=1)
                g = running.pop(done[0])
                for i, r in zip(g, ray.get(done[0])):
                    results[i] = r
                    bar.result(r)
                bar.update(len(g))
        return results

    def map_actors(self, make: Callable[[], Any], method: str, items: Sequence, desc: str = "",
                   cost: Callable[[Any], float] | None = None, size: Callable[[Any], int] | None = None,
                   resources: Resources | None = None) -> list:
        """Run `make().method(item)` for each item on a pool of `workers` actors.

        `resources` is a stage's hint, e.g. {"num_gpus": 1}: granted when the cluster has GPUs
        (and then no more actors than the GPUs hold, since an actor that cannot be placed would
        sit on its queued items forever), dropped when it has none, so the stage runs on CPUs.
        """
        if not items:
            return []
        groups = _groups(items, self.workers, cost, size, self.task_bytes)
        options, fit = actor_options(resources)
        actors = [_Worker.options(**options).remote(make) for _ in range(min(self.workers, len(groups), fit))]
        try:
            results: list = [None] * len(items)
            free = list(actors)
            running: dict = {}
            todo = list(groups)
            with _progress(len(items), desc) as bar:
                while todo or running:
                    while free and todo:
                        g = todo.pop(0)
                        actor = free.pop()
                        running[actor.call_many.remote(method, [items[i] for i in g])] = (g, actor)
                    done, _ = ray.wait(list(running), num_returns=1)
                    g, actor = running.pop(done[0])
                    for i, r in zip(g, ray.get(done[0])):
                        results[i] = r
                        bar.result(r)
                    free.append(actor)
                    bar.update(len(g))
            return results
        finally:
            for a in actors:
                ray.kill(a)
