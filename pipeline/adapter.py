"""The one place that imports ray: it maps stages onto Ray actors and tasks.

- `ray_session()` attaches to a cluster (`address` or `RAY_ADDRESS`) or starts an embedded local
  Ray, and reuses one that is already initialised (tests share one per session).
- `RayExecutor.map(fn, items)` runs a plain function as Ray tasks, at most `workers` in flight,
  with a progress bar; results come back in input order.
- `RayExecutor.map_actors(make, method, items)` builds `workers` actors, each constructing its
  worker object once (so a model loads once per actor, DESIGN.md), and feeds them items.

Data does not travel through the object store: tasks receive paths and write their own shards.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, Callable, Iterator, Sequence

import ray
from tqdm.auto import tqdm


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
def _call(fn: Callable, item: Any) -> Any:
    return fn(item)


@ray.remote(num_cpus=1)
class _Worker:
    def __init__(self, make: Callable[[], Any]):
        self.obj = make()

    def call(self, method: str, item: Any) -> Any:
        return getattr(self.obj, method)(item)

    def ping(self) -> int:
        return os.getpid()


def actor_options(hint: dict | None) -> tuple[dict, int]:
    """Ray actor options for a stage's resource hint, and how many such actors the cluster holds."""
    gpus = float((hint or {}).get("num_gpus") or 0)
    have = float(ray.cluster_resources().get("GPU", 0))
    if gpus <= 0 or have <= 0:
        return {}, sys.maxsize
    return {"num_gpus": gpus}, max(1, int(have // gpus))


def _largest_first(items: Sequence, cost: Callable[[Any], float] | None) -> list[int]:
    """Submission order: the costliest items first (LPT scheduling), so no worker is left with a
    big shard while the others idle at the end. Results still come back in input order."""
    order = list(range(len(items)))
    if cost is not None:
        order.sort(key=lambda i: -cost(items[i]))
    return order


def _progress(total: int, desc: str):
    # disable=None: drawn on a terminal, silent in logs and CI; TQDM_DISABLE=1 silences it anywhere.
    off = not desc or total == 0 or os.environ.get("TQDM_DISABLE") == "1"
    return tqdm(total=total, desc=desc, unit="shard", disable=True if off else None, file=sys.stderr, leave=False)


class RayExecutor:
    """`stages.base.Executor` on Ray."""

    def __init__(self, workers: int | None = None):
        self.workers = max(1, workers or cluster_cpus())

    def map(self, fn: Callable, items: Sequence, desc: str = "", cost: Callable[[Any], float] | None = None) -> list:
        launches = [lambda item=item: _call.remote(fn, item) for item in items]
        return self._drain(launches, desc, _largest_first(items, cost))

    def map_actors(self, make: Callable[[], Any], method: str, items: Sequence, desc: str = "",
                   cost: Callable[[Any], float] | None = None, resources: dict | None = None) -> list:
        """Run `make().method(item)` for each item on a pool of `workers` actors.

        `resources` is a stage's hint, e.g. {"num_gpus": 1}: granted when the cluster has GPUs
        (and then no more actors than the GPUs hold, since an actor that cannot be placed would
        sit on its queued items forever), dropped when it has none, so the stage runs on CPUs.
        """
        if not items:
            return []
        options, fit = actor_options(resources)
        actors = [_Worker.options(**options).remote(make) for _ in range(min(self.workers, len(items), fit))]
        try:
            results: list = [None] * len(items)
            free = list(actors)
            running: dict = {}
            todo = [(i, items[i]) for i in _largest_first(items, cost)]
            with _progress(len(items), desc) as bar:
                while todo or running:
                    while free and todo:
                        i, item = todo.pop(0)
                        actor = free.pop()
                        running[actor.call.remote(method, item)] = (i, actor)
                    done, _ = ray.wait(list(running), num_returns=1)
                    i, actor = running.pop(done[0])
                    results[i] = ray.get(done[0])
                    free.append(actor)
                    bar.update(1)
            return results
        finally:
            for a in actors:
                ray.kill(a)

    def _drain(self, launches: list[Callable[[], Any]], desc: str, order: list[int]) -> list:
        results: list = [None] * len(launches)
        running: dict = {}
        todo = [(i, launches[i]) for i in order]
        with _progress(len(launches), desc) as bar:
            while todo or running:
                while todo and len(running) < self.workers:
                    i, launch = todo.pop(0)
                    running[launch()] = i
                done, _ = ray.wait(list(running), num_returns=1)
                results[running.pop(done[0])] = ray.get(done[0])
                bar.update(1)
        return results
