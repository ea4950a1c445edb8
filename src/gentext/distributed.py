"""Data-parallel training with torch.distributed, as launched by `torchrun`.

    torchrun --nproc-per-node N -m gentext train ...            # one node
    torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT --nproc-per-node N -m gentext train ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op. NCCL on
GPUs, gloo on CPUs. Each rank reads its own rows of the global batch; only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import GentextError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo:
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return device


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any (so all ranks stop or skip together)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def mean(value: torch.Tensor, info: DistInfo) -> float:
    """The mean of a scalar over ranks (NaN anywhere gives NaN everywhere)."""
    if not info.enabled:
        return value.item()
    value = value.detach().clone().reshape(1)
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value.item() / info.world_size


def row_range(batch_size: int, info: DistInfo) -> range:
    if batch_size % info.world_size:
        raise GentextError(
            f"--batch-size {batch_size} must be divisible by the number of processes ({info.world_size})"
        )
    per_rank = batch_size // info.world_size
    return range(info.rank * per_rank, (info.rank + 1) * per_rank)


def gather_rows(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate every rank's (layers, rows, H) state along the row dimension."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=1)
