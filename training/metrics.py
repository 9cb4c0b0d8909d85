"""metrics.jsonl (one JSON object per line, namespaced keys with units), MFU and a progress bar.

Keys: `train/loss`, `train/lr`, `train/tokens`, `train/throughput(tok/s)`, `train/mfu(%)`,
`train/grad_norm`, `time/data_loading(%)`, `time/step(s)`, `time/eval(s)`, `time/checkpoint(s)`,
`eval/loss/<group>`, `data/realised/<phase>/<group>` and `data/planned/<phase>/<group>`. Every line
carries `step`. Throughput, MFU and step time leave eval and checkpoint time out.
On resume the file is cut back to the checkpoint's step, so it never holds a step twice.

The same values, under the same names, go to TensorBoard event files in `tensorboard/` beside
metrics.jsonl (`torch.utils.tensorboard.SummaryWriter`); on resume the writer purges events after
the checkpoint's step, as metrics.jsonl is cut.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

# Dense bf16 peak TFLOP/s per device (vendor datasheets, without sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "H800": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0,
               "L4": 121.0, "A10G": 125.0, "RTX 4090": 165.0}


def peak_tflops(device) -> float | None:
    """Peak bf16 TFLOP/s of a known CUDA device; None on CPU or an unknown device."""
    import torch

    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            # The PCIe H100 is slower than the SXM part the table lists.
            return 756.0 if key == "H100" and "PCIe" in name else value
    return None


class MetricsLog:
    """Appends metric lines to `metrics.jsonl` and scalars to TensorBoard (only on the main rank)."""

    def __init__(self, path: Path, enabled: bool = True, resume_step: int | None = None,
                 tensorboard: bool = True) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.tb = None
        self._tb_step: dict[str, int] = {}
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if resume_step is None:
            self.path.write_text("")
        else:
            self._truncate_after(resume_step)
        if tensorboard:
            self.tb = _summary_writer(self.path.parent / "tensorboard", resume_step)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is untrusted
        self.path.write_text("".join(k + "\n" for k in keep))

    def log(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
        if self.tb is not None:
            for k, v in values.items():
                # One point per name and step: the eval line repeats train/tokens of the step line.
                if isinstance(v, (int, float)) and not isinstance(v, bool) and self._tb_step.get(k) != step:
                    self.tb.add_scalar(k, v, global_step=step)
                    self._tb_step[k] = step

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _summary_writer(log_dir: Path, resume_step: int | None):
    """A SummaryWriter on `log_dir`; a fresh run starts with no old event files (as metrics.jsonl
    starts empty), a resumed one hides events after the checkpoint's step (`purge_step`)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # pragma: no cover - tensorboard is a declared dependency
        raise ImportError("TensorBoard logging needs the tensorboard package: pip install 'tensorboard>=2.14'") from e
    if resume_step is None and log_dir.is_dir():
        for old in log_dir.glob("events.out.tfevents.*"):
            old.unlink()
    purge = resume_step + 1 if resume_step is not None else None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge, flush_secs=10)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()] if p.exists() else []


class Progress:
    """tqdm bar over steps on the main rank (respects TQDM_DISABLE) when stderr is a terminal; in a
    log (a file, a pipe, `ray job logs`) a plain line every CURATE_PROGRESS_S seconds (default 30)
    through logging instead, since a bar's carriage returns make one endless line there; a no-op
    on other ranks."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        import os

        self.bar, self.every = None, float(os.environ.get("CURATE_PROGRESS_S", "30"))
        self.total, self.step, self.last = total, initial, time.monotonic()
        self.lines = enabled and not sys.stderr.isatty() and os.environ.get("TQDM_DISABLE") != "1" and self.every > 0
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, postfix: dict[str, Any]) -> None:
        self.step += 1
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)
        elif self.lines and (time.monotonic() - self.last >= self.every or self.step == self.total):
            import logging

            self.last = time.monotonic()
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())
            logging.getLogger("curate.train").info(f"train: step {self.step}/{self.total}" + (f", {shown}" if shown else ""))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class Timer:
    """Seconds of training since the last lap (eval/checkpoint excluded) and of waiting for data."""

    def __init__(self) -> None:
        self.data = 0.0
        self.tokens = 0
        self.steps = 0
        self._t0 = time.perf_counter()

    def reset(self) -> None:
        self.__init__()

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` (spent on eval or a checkpoint) out of the current window."""
        self._t0 += seconds

    def lap(self) -> float:
        now = time.perf_counter()
        dt, self._t0 = now - self._t0, now
        return dt
