"""Data parallelism over torch.distributed: the same code path for 1 or N processes (torchrun)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def init_distributed() -> DistContext:
    """Join the process group torchrun describes in the environment; single-process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def device_for_rank(device: torch.device, ctx: DistContext) -> torch.device:
    """Each rank takes its own GPU (cuda:LOCAL_RANK); CPU ranks share the CPU."""
    if device.type == "cuda" and ctx.is_distributed:
        return torch.device("cuda", ctx.local_rank)
    return device


def all_gather_dicts(part: dict, ctx: DistContext) -> dict:
    """Merge a dict from every rank into one, on every rank."""
    if not ctx.is_distributed:
        return dict(part)
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, part)
    merged: dict = {}
    for p in parts:
        merged.update(p)
    return merged


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a final barrier) so processes exit cleanly."""
    if ctx.is_distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
