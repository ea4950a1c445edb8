"""Devices and numeric precision: where the model runs and whether autocast is on."""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from gentext.errors import GentextError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GentextError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _cpu_flags() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_native(dtype: torch.dtype) -> bool:
    """Does this CPU multiply in `dtype` natively? Emulated bf16/fp16 matmuls are ~100x slower
    than float32, so neither "auto" nor an explicit flag may pick them on such a CPU."""
    flags = _cpu_flags()
    if dtype == torch.bfloat16:
        return "avx512_bf16" in flags or "amx_bf16" in flags
    if dtype == torch.float16:
        return "avx512_fp16" in flags or "amx_fp16" in flags
    return True


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training steps, or None for plain float32 (evaluation and generation
    always run in float32). fp16 trains with a GradScaler (see trainer)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_native(torch.bfloat16) else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and not cpu_native(dtype):
        need = "AVX-512 BF16 or AMX" if dtype == torch.bfloat16 else "AVX-512 FP16 or AMX-FP16"
        raise GentextError(
            f"--precision {precision}: this CPU has no native {precision} ({need}); emulated it is ~100x slower "
            "than float32. Use --precision fp32 or auto"
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise GentextError("--precision bf16: this GPU has no bf16; use --precision fp16 or auto")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
