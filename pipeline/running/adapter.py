"""The one place that imports ray: it maps stages onto Ray actors and tasks.

- `ray_session()` attaches to a cluster (`address` or `RAY_ADDRESS`) or starts an embedded local
  Ray, and reuses one that is already initialised (tests share one per session).
- `RayExecutor.map(fn, items)` runs a plain function as Ray tasks, at most `workers` in flight,
  with a progress bar; results come back in input order.
- `RayExecutor.map_actors(make, method, items)` builds `workers` actors, each constructing its
  worker object once (so a model loads once per actor, docs/internals.md), and feeds them items,
  the next group already queued at each actor while it works on one (`IN_FLIGHT`).
- Both implement `stages.base.Executor`: with `size`, small items travel several to a task
  (each still writes its own output and marker); a stage's resource hint becomes actor options.

Data does not travel through the object store: tasks receive paths and write their own shards.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from typing import Any, Callable, Iterator, Sequence

import ray

from curate.pipeline.errors import CurateError
from curate.pipeline.running import logs
from curate.pipeline.running.progress import progress
from curate.stages.base import TASK_BYTES, Resources, group_by_size

log = logs.log.getChild("ray")


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Use the running Ray, attach to `address`, or start (and later stop) a local one, lean: no
    dashboard unless CURATE_RAY_DASHBOARD=1, no runtime env."""
    if ray.is_initialized():
        yield
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(include_dashboard=os.environ.get("CURATE_RAY_DASHBOARD") == "1",
                                  logging_level="ERROR", log_to_driver=True)
    if address:
        # A cluster's nodes install the project themselves (ray_cluster.yaml), and `ray job
        # submit --working-dir` sets the job's own runtime env: leave it alone.
        ray.init(address=address, **kwargs)
    else:
        # "local" always starts a new embedded instance; plain ray.init() would attach to any
        # cluster another process on this machine started with `ray start`. Local workers get
        # the driver's sys.path, so code the driver can import (a script's or a test's own
        # module) imports in them too: through the environment the raylet inherits, which costs
        # nothing, where a runtime env's env_vars cost each new worker a round trip to Ray's
        # runtime-env agent (1.5-2 s more to a first batch of tasks on 2 cores).
        with _environ(PYTHONPATH=os.pathsep.join(p for p in sys.path if p)):
            ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), **kwargs)
    try:
        yield
    finally:
        ray.shutdown()


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def cluster_cpus() -> int:
    return int(ray.cluster_resources().get("CPU", 1))


@ray.remote(num_cpus=1, max_retries=0)  # the driver retries a lost task itself (`_Driver`), so it can say so
def _call_many(fn: Callable, items: list) -> list:
    return [fn(item) for item in items]


@ray.remote(num_cpus=1, max_restarts=0)  # a lost actor is replaced by a new one (`_Driver`), which reloads its model
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


# What a dead worker process, a dead node or its lost objects raise; a stage's own error (RayTaskError)
# is not among them and is never retried.
LOST = (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
        ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError)
RETRIES = 3  # a task's tries after its first, when the config's `ray.retries` does not say
# Groups in flight per worker: with two, a worker's next group is already queued at it when it
# ends one, where with one it idled for a round trip through the driver (bench/README.md, "Quality
# scoring": a few ms on an idle machine, tens when the driver waits for a core).
IN_FLIGHT = 2
ACTOR_SPLIT = 4  # an actor's groups are this many times smaller than a task's, and this many more


def _label(item: Any, depth: int = 0) -> str | None:
    """The shard (or input) an item works on, for the loss line: a job's `input`, a task's path."""
    if depth > 3:
        return None
    if isinstance(item, (str, os.PathLike)):
        return os.path.basename(str(item)).split(".")[0] or None
    if isinstance(item, tuple):
        return next(filter(None, (_label(x, depth + 1) for x in item)), None)
    for attr in ("input", "path", "task", "read"):
        found = _label(getattr(item, attr), depth + 1) if hasattr(item, attr) else None
        if found:
            return found
    return None


def _where(e: BaseException) -> str:
    """` (pid N on node IP)` from Ray's death message, where it says."""
    text = str(e)
    pid, ip = re.search(r"\bpid: (\d+)", text), re.search(r"\bip: ([0-9a-fA-F.:]+)", text)
    if not pid and not ip:
        return ""
    return " (" + " ".join(filter(None, [pid and f"pid {pid.group(1)}", ip and f"on node {ip.group(1)}"])) + ")"


def _is_loss(e: BaseException) -> bool:
    """A worker or node lost, not a stage's own error: an actor whose constructor raised (a bad
    model path) dies too, and that is the stage's error, raised as it is."""
    return isinstance(e, LOST) and not getattr(e, "actor_init_failed", False)


class _Driver:
    """Feeds task groups to slots (task tokens or actors) and collects results in input order.
    Each slot holds up to `depth` groups at once, so a worker starts its next group the moment it
    ends one instead of idling for a round trip through this process; for actors (`bound`), the
    groups queued on one die with it. A group lost with its worker is resubmitted, at most
    `retries` times, with one line each (a group only queued behind it is resubmitted silently).
    `replace(slot)` gives the slot that takes over (a new actor for a dead one) and what to wait
    for before it can take work (the new actor's first reply: it is placed when the cluster has
    room, and work is never queued behind one that cannot be placed yet)."""

    def __init__(self, executor: "RayExecutor", items: Sequence, desc: str,
                 submit: Callable[[Any, list], Any], replace: Callable[[Any], tuple[Any, Any]],
                 size: Callable[[Any], int] | None, depth: int = 1, bound: bool = False):
        self.executor, self.items, self.desc, self.submit, self.replace = executor, items, desc, submit, replace
        self.size = size or (lambda item: 0)
        self.depth, self.bound = max(1, depth), bound

    def run(self, groups: list[list[int]], slots: list, starting: dict | None = None) -> list:
        """`starting`: slots that take work only once they answer (readiness -> slot), as a
        replacement does: new actors, so that none queues work behind a start that is slower
        than another's (a model that loads later, a node that has no room yet)."""
        self.results: list = [None] * len(self.items)
        self.running: dict = {}  # a group's result -> (its submission number, group, slot)
        self.pending: dict = dict(starting or {})  # a starting slot's readiness -> the slot
        self.todo, self.tries = list(groups), [0] * len(groups)
        self.order = {id(g): n for n, g in enumerate(groups)}
        # Every slot's first token before any slot's second: the largest groups (first, LPT) spread.
        ready = [s for s in slots if s not in self.pending.values()]
        self.free, sent = [s for _ in range(self.depth) for s in reversed(ready)], 0
        with _progress(len(self.items), self.desc) as bar:
            while self.todo or self.running:
                while self.free and self.todo and (slot := self._pick(len(slots))) is not None:
                    g = self.todo.pop(0)
                    self.running[self.submit(slot, [self.items[i] for i in g])] = (sent, g, slot)
                    sent += 1
                done, _ = ray.wait(list(self.running) + list(self.pending), num_returns=1)
                if done[0] in self.pending:
                    self._ready(done[0], self.pending.pop(done[0]))
                    continue
                n, g, slot = self.running.pop(done[0])
                try:
                    out = ray.get(done[0])
                except Exception as e:
                    if not _is_loss(e):
                        raise
                    self._requeue(n, g, slot, e)
                    continue
                for i, r in zip(g, out):
                    self.results[i] = r
                    bar.result(r)
                self.free.append(slot)
                bar.update(len(g), sum(self.size(self.items[i]) for i in g))
        return self.results

    def _pick(self, slots: int) -> Any:
        """A free slot for the next group. An actor's queue is its own: a group queued behind a
        busy actor cannot move to one that frees up first, so near the end (fewer groups left
        than slots), groups go only to idle actors, largest first, as plain LPT would."""
        if not self.bound:
            return self.free.pop()
        busy = {id(s) for _, _, s in self.running.values()}
        idle = [k for k, s in enumerate(self.free) if id(s) not in busy]
        if idle:
            return self.free.pop(idle[-1])
        return self.free.pop() if len(self.todo) > slots else None

    def _requeue(self, n: int, g: list[int], slot: Any, e: BaseException) -> None:
        """`g` (submitted `n`th) was lost with its worker. On an actor, every group it held dies
        with it: the oldest was running and counts as a try, the others were only queued. They go
        first again, in their order, and the slot is replaced."""
        held = [(n, g)]
        if self.bound:
            mine = [ref for ref, (_, _, s) in self.running.items() if s is slot]
            held = sorted(held + [self.running.pop(ref)[:2] for ref in mine])
            self.free = [s for s in self.free if s is not slot]
        first = held[0][1]
        k = self.order[id(first)]
        self.tries[k] += 1
        self._lost(first, self.tries[k], e)
        self.todo[:0] = [h for _, h in held]
        self._take_over(slot)

    def _take_over(self, dead: Any) -> None:
        new, ready = self.replace(dead)
        if ready is None:
            self.free.append(new)
        else:
            self.pending[ready] = new

    def _ready(self, ref: Any, slot: Any) -> None:
        """A replacement answered: it takes work; one lost before it could is replaced again."""
        try:
            ray.get(ref)
        except Exception as e:
            if not _is_loss(e):
                raise
            self.executor.lost += 1
            if self.executor.lost > self.executor.retries * 4 + 8:
                raise CurateError(f"{self.desc or 'a step'}: workers keep dying before they start{_where(e)}; "
                                  f"rerun the same command to resume (finished shards are kept)") from None
            self._take_over(slot)
            return
        self.free.extend([slot] * self.depth)

    def _lost(self, g: list[int], n: int, e: BaseException) -> None:
        label = _label(self.items[g[0]]) or f"item {g[0]}"
        what = f"{self.desc or 'a step'}/{label}" + (f" (+{len(g) - 1} more)" if len(g) > 1 else "")
        self.executor.lost += 1
        retries = self.executor.retries
        if n > retries:
            raise CurateError(f"worker lost {n} times during {what}{_where(e)}; giving up after {retries} "
                              f"retries (ray.retries); rerun the same command to resume (finished shards are kept)")
        log.warning(f"worker lost{_where(e)} during {what}; retrying ({n}/{retries})")


class RayExecutor:
    """`stages.base.Executor` on Ray. `task_bytes`: what a task of small items should read
    (0: one item per task, as before grouping; bench/bench_small_shards.py compares).
    `retries`: how often the work of a lost worker is tried again; `lost` counts the losses."""

    def __init__(self, workers: int | None = None, task_bytes: int = TASK_BYTES, retries: int | None = None):
        self.workers = max(1, workers or cluster_cpus())
        self.task_bytes = task_bytes
        self.retries = RETRIES if retries is None else max(0, retries)
        self.lost = 0

    def map(self, fn: Callable, items: Sequence, desc: str = "", cost: Callable[[Any], float] | None = None,
            size: Callable[[Any], int] | None = None) -> list:
        groups = _groups(items, self.workers, cost, size, self.task_bytes)
        driver = _Driver(self, items, desc, lambda slot, batch: _call_many.remote(fn, batch),
                         lambda slot: (slot, None), size, depth=IN_FLIGHT)
        return driver.run(groups, list(range(self.workers)))

    def map_actors(self, make: Callable[[], Any], method: str, items: Sequence, desc: str = "",
                   cost: Callable[[Any], float] | None = None, size: Callable[[Any], int] | None = None,
                   resources: Resources | None = None) -> list:
        """Run `make().method(item)` for each item on a pool of `workers` actors.

        `resources` is a stage's hint, e.g. {"num_gpus": 1}: granted when the cluster has GPUs
        (and then no more actors than the GPUs hold, since an actor that cannot be placed would
        sit on its queued items forever), dropped when it has none, so the stage runs on CPUs.
        An actor lost with its process or node is replaced by a new one, which runs `make()`
        (loads its model) again.
        """
        if not items:
            return []
        # Smaller groups than a task's: with the next group already queued at an actor a group
        # costs no round trip, and the last groups, which only idle actors take, end it evenly.
        groups = _groups(items, self.workers * ACTOR_SPLIT, cost, size, self.task_bytes // ACTOR_SPLIT)
        options, fit = actor_options(resources)
        actors = [_Worker.options(**options).remote(make) for _ in range(min(self.workers, len(groups), fit))]

        def replace(dead):
            ray.kill(dead, no_restart=True)
            actors[actors.index(dead)] = new = _Worker.options(**options).remote(make)
            return new, new.ping.remote()

        try:
            # An actor takes work once it has answered: the first one ready starts, and none
            # holds queued groups while it is still loading its model (bench/README.md).
            return _Driver(self, items, desc, lambda actor, batch: actor.call_many.remote(method, batch),
                           replace, size, depth=IN_FLIGHT, bound=True).run(
                groups, list(actors), starting={a.ping.remote(): a for a in actors})
        finally:
            for a in actors:
                ray.kill(a)
