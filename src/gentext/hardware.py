"""Devices and numeric precision: where the model runs and whether autocast is on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .errors import GentextError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GentextError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    # bf16 matmuls are only fast with native instructions (AVX-512 BF16 or AMX); emulated they are
    # ~100x slower than float32, so "auto" must not pick them on an AVX2-only CPU.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
