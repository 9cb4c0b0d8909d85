"""Process groups and model wrapping for torchrun, Ray Train (`training/ray_train.py`) or a spawn helper.

Every rank runs the same sampler, so all ranks agree on each global batch without communication;
rank r trains on its contiguous slice. The loss is normalised by the global count of valid target
tokens, so 1 process and N processes at the same global batch compute the same gradient.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass
class Dist:
    rank: int
    world: int
    local_rank: int
    device: Any
    """torch.device this rank trains on."""
    owns_group: bool
    """True when this module created the process group (and so must destroy it)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Dist:
    """Join the process group that torchrun / Ray Train / a spawn helper describes, or run alone."""
    import torch
    import torch.distributed as dist

    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device is 'cuda' but torch sees no CUDA device (a CPU-only torch build, or no GPU "
                         "visible: check CUDA_VISIBLE_DEVICES); use device: auto or device: cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)  # before the process group, so NCCL binds this rank's GPU
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    return Dist(rank, world, local_rank, dev, owns)


def teardown(d: Dist) -> None:
    import torch.distributed as dist

    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    import torch.distributed as dist

    if d.world > 1:
        dist.barrier()


def all_reduce_sum(d: Dist, t):
    import torch.distributed as dist

    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap(model, d: Dist, parallel: str):
    """DDP (or FSDP2 `fully_shard`, per block then the root) across ranks; the bare model alone."""
    if d.world == 1:
        return model
    if parallel == "fsdp":
        try:
            from torch.distributed.fsdp import fully_shard
        except ImportError as e:  # torch < 2.6
            raise ImportError("parallel: fsdp needs torch >= 2.6 (torch.distributed.fsdp.fully_shard)") from e
        for layer in model.blocks() if hasattr(model, "blocks") else model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DDP(model, device_ids=ids)
