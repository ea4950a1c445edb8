"""Data-parallel training with torch.distributed, as launched by `torchrun`.

    torchrun --nproc-per-node N -m gentext train ...            # one node
    torchrun --nnodes 2 --node-rank R --rdzv-endpoint HOST:PORT --nproc-per-node N -m gentext train ...

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op. NCCL for
GPU tensors, gloo for CPU tensors (one process group with both). Each rank reads its own rows of
the global batch; only rank 0 reads or writes the run directory: on a multi-node run `--out` may
exist on rank 0's disk alone, so what the others need from it (the config on resume, the training
state) is read by rank 0 and broadcast (`from_main`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from gentext.errors import GentextError
from gentext.models.state import State


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


def init(info: DistInfo) -> None:
    """Join the process group (once)."""
    if info.enabled and not dist.is_initialized():
        dist.init_process_group(backend="cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")


def setup(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (once) and return this rank's device."""
    if not info.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    init(info)
    return device


def from_main(read: Callable[[], bytes], info: DistInfo) -> bytes:
    """Rank 0 calls `read()`; its bytes, or its GentextError, reach every rank."""
    if not info.enabled:
        return read()
    payload, failed = b"", False
    if info.is_main:
        try:
            payload = read()
        except GentextError as exc:
            payload, failed = str(exc).encode(), True
    header = torch.tensor([int(failed), len(payload)], dtype=torch.int64)
    dist.broadcast(header, 0)
    buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8) if info.is_main else None
    if buffer is None or buffer.numel() == 0:
        buffer = torch.zeros(int(header[1]), dtype=torch.uint8)
    dist.broadcast(buffer, 0)
    data = buffer.numpy().tobytes()
    if header[0]:
        raise GentextError(data.decode())
    return data


def all_gather_cpu(tensor: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """Every rank's copy of a same-shaped CPU tensor (RNG states), in rank order."""
    if not info.enabled:
        return [tensor]
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return parts


def barrier(info: DistInfo) -> None:
    """Wait for every rank (rank 0 writes and evaluates alone at the end: the others wait for it
    rather than tear the group down under it)."""
    if info.enabled and dist.is_initialized():
        dist.barrier()


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


def gather_state(state: State, info: DistInfo) -> State:
    """Every rank's rows of a model state, joined in rank order (the global batch)."""
    if not info.enabled:
        return state
    parts = [state.map(torch.empty_like) for _ in range(info.world_size)]
    for name, tensor in state.tensors.items():
        dist.all_gather([part.tensors[name] for part in parts], tensor.contiguous())
    return State.cat(parts)
