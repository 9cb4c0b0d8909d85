"""CPU seconds of this process and everything it started (Ray's raylet, its workers and actors
are descendants of the driver that started a local Ray), sampled once a second: on a shared
machine wall time says little, CPU time says what the work costs. A process that ends between two
samples loses at most its last second."""

from __future__ import annotations

import threading
import time


class CpuMeter:
    def __init__(self, every: float = 1.0):
        import psutil

        self.me = psutil.Process()
        self.seen: dict[tuple[int, float], float] = {}  # (pid, start time) -> CPU seconds last seen
        self.every = every
        self.marks: list[dict] = []
        self._last = (time.time(), 0.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> float:
        import psutil

        procs = [self.me]
        try:
            procs += self.me.children(recursive=True)
        except psutil.Error:
            pass
        for p in procs:
            try:
                with p.oneshot():
                    c = p.cpu_times()
                    self.seen[(p.pid, p.create_time())] = c.user + c.system
            except psutil.Error:
                continue
        return sum(self.seen.values())

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> "CpuMeter":
        self._last = (time.time(), self._sample())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def mark(self, name: str) -> dict:
        """Wall and CPU seconds since the previous mark, under `name`."""
        now, cpu = time.time(), self._sample()
        m = {"step": name, "wall_s": round(now - self._last[0], 1), "cpu_s": round(cpu - self._last[1], 1)}
        self._last = (now, cpu)
        self.marks.append(m)
        return m


class Heartbeat:
    """A progress line every `every` seconds from `read()` while a long call runs."""

    def __init__(self, read, echo, every: float = 30.0):
        self.read, self.echo, self.every = read, echo, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            line = self.read()
            if line:
                self.echo(line)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
