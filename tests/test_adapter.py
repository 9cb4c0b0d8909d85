"""The Ray adapter's driver: each actor holds its next group while it works on one, so a driver
slow to come back (a loaded machine, a busy driver) does not leave it idle; a group queued behind
one whose actor dies is resubmitted without counting as a loss; no work is queued behind an actor
that is still starting; task workers keep what a stage caches per process (tokenize's model) from
one task to the next."""

from __future__ import annotations

import logging
import os
import signal
import time


ITEM_S, DRIVER_S, LONG_GAP_S = 0.4, 0.15, 0.1


class _Timed:
    """An actor's worker: each item takes ITEM_S and says when it ran and where."""

    def run(self, n: int) -> tuple[int, float, float]:
        t0 = time.time()
        time.sleep(ITEM_S)
        return os.getpid(), t0, time.time()


def _long_gaps(results: list[tuple[int, float, float]]) -> int:
    """Waits longer than LONG_GAP_S between one item's end and the next item's start on an actor."""
    by_actor: dict[int, list] = {}
    for pid, start, end in sorted(results, key=lambda r: r[1]):
        by_actor.setdefault(pid, []).append((start, end))
    assert len(by_actor) == 2
    return sum(b[0] - a[1] > LONG_GAP_S for runs in by_actor.values() for a, b in zip(runs, runs[1:]))


def _slow_driver(item: int) -> int:
    time.sleep(DRIVER_S)  # the driver calls `size` once per finished group, before it sends the next
    return 1


def test_actors_keep_working_while_the_driver_is_slow(ray_session, monkeypatch):
    from curate.pipeline.running import adapter

    items = list(range(12))  # one item per group (task_bytes=0): 5 waits between items per actor
    queued = adapter.RayExecutor(2, task_bytes=0).map_actors(_Timed, "run", items, size=_slow_driver)
    # Only the last groups wait for an idle actor, as plain LPT places them (`_Driver._pick`).
    assert _long_gaps(queued) <= 2
    monkeypatch.setattr(adapter, "IN_FLIGHT", 1)  # one group per actor at a time, as before
    one = adapter.RayExecutor(2, task_bytes=0).map_actors(_Timed, "run", items, size=_slow_driver)
    assert _long_gaps(one) >= 8


class _DiesOnItemZero:
    """Dies (SIGKILL, as the OOM killer would) on item 0 the first time; the flag file says it did."""

    def __init__(self, flag: str):
        self.flag = flag

    def run(self, n: int) -> int:
        if n == 0:
            try:
                os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                return 0
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(0.05)
        return n * n


def test_a_group_queued_behind_a_lost_one_is_resubmitted_uncounted(ray_session, tmp_path, caplog):
    from functools import partial

    from curate.pipeline.running.adapter import RayExecutor

    ex = RayExecutor(2, task_bytes=0)
    items = list(range(10))
    flag = tmp_path / "died"
    with caplog.at_level(logging.WARNING, logger="curate"):
        out = ex.map_actors(partial(_DiesOnItemZero, str(flag)), "run", items, desc="square")
    assert flag.exists()  # item 0's actor died, with item 2 queued behind it
    assert out == [n * n for n in items]
    lost = [r.getMessage() for r in caplog.records if "worker lost" in r.getMessage()]
    assert ex.lost == 1 and len(lost) == 1
    assert "during square/item 0" in lost[0] and lost[0].endswith("retrying (1/3)")


SLOW_START_S = 8.0


class _SlowStart:
    """An actor's worker; the first actor to be built takes SLOW_START_S to start (a model that
    loads later, a node slow to place it), the other starts at once."""

    def __init__(self, flag: str):
        try:
            os.close(os.open(flag, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            time.sleep(SLOW_START_S)
        except FileExistsError:
            pass

    def run(self, n: int) -> int:
        time.sleep(0.05)
        return os.getpid()


def test_no_work_waits_behind_an_actor_that_is_still_starting(ray_session, tmp_path):
    """Actors take work once they have answered: the one that started does all eight items while
    the other is still starting, so the stage does not wait for it."""
    from functools import partial

    from curate.pipeline.running.adapter import RayExecutor

    t0 = time.time()
    pids = RayExecutor(2, task_bytes=0).map_actors(partial(_SlowStart, str(tmp_path / "slow")), "run", list(range(8)))
    assert (tmp_path / "slow").exists() and len(set(pids)) == 1
    assert time.time() - t0 < SLOW_START_S


def _load_count(path: str) -> tuple[int, int]:
    from curate.stages.tokens.tokenizers import _load, load_tokenizer

    load_tokenizer(path).encode(["warm"])
    return os.getpid(), _load.cache_info().misses


def test_task_workers_load_a_tokenizer_once(ray_session, tmp_path):
    """Tokenize runs as plain tasks (`stagework.write_shard`): its model is cached per process,
    which is once per worker only because Ray hands the same warm processes each task."""
    import pydoc_data.topics

    from curate.pipeline.running.adapter import RayExecutor
    from curate.stages.tokens.tokenizers import TokenizerConfig, train_tokenizer

    model = tmp_path / "sp.model"
    train_tokenizer(list(pydoc_data.topics.topics.values()), TokenizerConfig(vocab_size=500), model)
    seen = RayExecutor(2, task_bytes=0).map(_load_count, [str(model)] * 16)
    # A process's cache misses stay as its first task left them (the session's workers may have
    # loaded other models for earlier tests): it loaded this model once, however many shards.
    by_pid: dict[int, set] = {}
    for pid, misses in seen:
        by_pid.setdefault(pid, set()).add(misses)
    assert 1 <= len(by_pid) <= 2 and all(len(m) == 1 for m in by_pid.values())
