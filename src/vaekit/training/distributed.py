"""DistributedDataParallel glue: the same script runs alone or under ``torchrun``.

When ``WORLD_SIZE`` > 1 in the environment and no process group exists yet, the trainer
initialises one from the environment variables ``torchrun`` sets (gloo on the CPU, NCCL on
CUDA), pins each process to its local accelerator, shards the data by rank, and lets only
rank 0 log and write files.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "setup_distributed", "shard_indices"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands in a (possibly one-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    created_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from err


def env_world_size() -> int:
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def setup_distributed(device: torch.device) -> DistInfo:
    """Joins (or creates) the process group when this process is part of a multi-process job.

    Args:
        device: the device this process trains on (its type picks the backend).

    Returns:
        This process's rank, the world size, its local rank, and whether the group was
        created here (it is then destroyed when the process exits).
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=_env_int("LOCAL_RANK", 0),
        )
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistInfo()
    if not dist.is_available():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} asks for distributed training, but this PyTorch build "
            "has no torch.distributed"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type not in ("cpu", "cuda"):
        backend = dist.Backend.default_device_backend_map.get(device.type, "gloo")
    logger.info("initialising the process group: backend=%s world_size=%d", backend, world_size)
    dist.init_process_group(backend=backend)
    # The group lives as long as the process: re-creating it between two fit() calls races
    # with stale rendezvous keys in the launcher's store, so it is destroyed only at exit.
    atexit.register(_destroy_process_group)
    return DistInfo(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_env_int("LOCAL_RANK", 0),
        created_group=True,
    )


def _destroy_process_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_indices(indices: torch.Tensor, rank: int, world_size: int, pad: bool) -> torch.Tensor:
    """This rank's share of a permutation, as ``DistributedSampler`` would give it.

    Args:
        indices: ``(N,)`` the epoch's order, the same on every rank.
        rank: this process's rank.
        world_size: number of processes.
        pad: repeat leading indices so that every rank gets ``ceil(N / world_size)`` (needed
            for training, where every rank must take the same number of steps); without it the
            shards may differ by one (for evaluation, which must not count examples twice).

    Returns:
        ``indices[rank::world_size]`` of the (padded) order.
    """
    if world_size == 1:
        return indices
    n = indices.shape[0]
    if pad:
        total = -(-n // world_size) * world_size
        if total > n:
            reps = -(-total // n)
            indices = indices.repeat(reps)[:total]
    return indices[rank::world_size]
