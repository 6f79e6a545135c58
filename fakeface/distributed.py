"""Multi-process training with torch.distributed, kept in one place so the training loop reads as one process.

`torchrun` describes the job in the environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
`init_from_env` joins that process group. Every helper here is a no-op in a single process, so callers never
branch on "am I distributed?".

Layout of the work: rank r takes items r, r + N, r + 2N... of a list (`shard`); `gather_shards` undoes that.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import FakefaceError


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world() -> World:
    """This process's rank and the number of processes (0 and 1 outside a process group)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size())
    return World()


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def init_from_env(backend: str | None = None) -> World:
    """Join the process group torchrun describes in the environment; a no-op when WORLD_SIZE is unset or 1."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return world()
    backend = backend or default_backend()
    device = None
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)  # one GPU per process: torch.device("cuda") now means this one
    # Ranks wait for each other at barriers while their shares of feature extraction finish; the default
    # timeout (10 min for NCCL) is too short for a large data set with a partly warm cache.
    minutes = float(os.environ.get("FAKEFACE_DIST_TIMEOUT_MIN", "120"))
    dist.init_process_group(backend, timeout=timedelta(minutes=minutes), device_id=device)
    return world()


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world().distributed:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. a checkpoint that only rank 0's disk holds)."""
    if not world().distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_across(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all ranks (float64, so counts stay exact)."""
    if not world().distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


# --------------------------------------------------------------------------------------- splitting the work


def shard(items, rank: int, world_size: int):
    """Every `world_size`-th item starting at `rank`: shares differ in size by at most one, in a fixed order."""
    return items[rank::world_size]


def parse_shard(text: str) -> tuple[int, int]:
    """'i/n' -> (i, n) with 0 <= i < n."""
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise FakefaceError(f"--shard takes i/n, e.g. 0/4 for the first of four shards, not {text!r}.") from None
    if not 0 <= i < n:
        raise FakefaceError(f"--shard {text}: need 0 <= i < n.")
    return i, n


def gather_shards(part: np.ndarray) -> np.ndarray:
    """Reassemble the full array from every rank's `shard(full, rank, world_size)`, in the original order."""
    w = world()
    if not w.distributed:
        return part
    parts = [None] * w.world_size
    dist.all_gather_object(parts, part)
    full = np.empty((sum(len(p) for p in parts),) + part.shape[1:], dtype=part.dtype)
    for rank, p in enumerate(parts):
        full[rank::w.world_size] = p
    return full


def epoch_sampler(seed: int):
    """`sampler_factory(dataset, epoch)` for `training.fit`: one seeded permutation per epoch, cut by rank.

    A single process uses it too (one replica), so N processes with batch b/N see exactly the batches of one
    process with batch b: step k of rank r holds permutation items k*b + r, k*b + r + N, ...
    drop_last: no rank pads its share with repeated images, which one process would not have seen.
    """
    from torch.utils.data.distributed import DistributedSampler

    def factory(dataset, epoch: int):
        w = world()
        sampler = DistributedSampler(dataset, num_replicas=w.world_size, rank=w.rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        return sampler

    return factory


# ---------------------------------------------------------------------------------------------------- model


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel (gradients averaged across ranks) when distributed, else the model itself.

    On CUDA, BatchNorm becomes SyncBatchNorm so its batch statistics cover the global batch, as in one
    process. (SyncBatchNorm is GPU-only: CPU/gloo runs keep per-rank BatchNorm statistics.)
    """
    if not world().distributed:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        index = torch.cuda.current_device() if device.index is None else device.index
        return nn.parallel.DistributedDataParallel(model, device_ids=[index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
