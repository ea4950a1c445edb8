"""Machine limits for the generation roofline (bench_generation.py): what the CPU offers, how fast it
reads memory at a given working set and how fast it multiplies, and what one step reads and
computes in the model's current weight format."""

from __future__ import annotations

import time

import torch


def cpu_features() -> str:
    """The CPU features gentext's choices depend on (gentext.hardware reads them for doctor too)."""
    from gentext.hardware import cpu_report

    return " ".join(cpu_report()["features"]) or "none of the AVX2/AVX-512/AMX features"


def _best_seconds(fn, seconds: float = 0.3) -> tuple[float, int]:
    """The fastest of repeated calls over about `seconds`, and how many calls that was."""
    fn()
    best, calls, start = float("inf"), 0, time.perf_counter()
    while time.perf_counter() - start < seconds or calls < 3:
        t = time.perf_counter()
        fn()
        best, calls = min(best, time.perf_counter() - t), calls + 1
    return best, calls


def bandwidth_gbs(nbytes: int) -> float:
    """Read bandwidth with a working set of `nbytes` (sum over a float32 tensor of that size, all
    threads): from L2/L3 for a small model's weights, from DRAM for big ones."""
    data = torch.ones(max(nbytes // 4, 1 << 14))
    best, _ = _best_seconds(lambda: data.sum())
    return data.numel() * 4 / best / 1e9


def matmul_peaks(tiny: bool = False) -> dict[str, float]:
    """GFLOP/s of a large square matmul per format this CPU runs natively (int8: the quantized
    and fp16: the kernels those formats call)."""
    from gentext.hardware import cpu_native
    from gentext.models.weights import Fp16Matmul, Int8Matmul, fp16_weights_native

    n = 256 if tiny else 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    peaks = {"fp32": 2 * n**3 / _best_seconds(lambda: a @ b)[0] / 1e9}
    if cpu_native(torch.bfloat16):
        ab, bb = a.bfloat16(), b.bfloat16()
        peaks["bf16"] = 2 * n**3 / _best_seconds(lambda: ab @ bb)[0] / 1e9
    if fp16_weights_native():
        half = Fp16Matmul(b, None)
        peaks["fp16"] = 2 * n**3 / _best_seconds(lambda: half(a))[0] / 1e9
    op = Int8Matmul(b, None)
    peaks["int8"] = 2 * n**3 / _best_seconds(lambda: op(a))[0] / 1e9
    return peaks


def _matrices(model) -> list:
    ops = model._step_ops()
    layers = [layer.values() if isinstance(layer, dict) else layer for layer in ops["layers"]]  # RNN: (x, h) pairs
    return [m for layer in layers for m in layer if m is not None] + (
        [ops["head"]] if hasattr(ops["head"], "bytes") else []
    )


def step_bytes(model) -> float:
    """Bytes of weights one generation step reads in the current format (the layer-0 lookup reads
    one row per stream: negligible)."""
    return sum(m.bytes() for m in _matrices(model))


def step_flops(model) -> float:
    """Multiply-adds x 2 of one step for one stream."""
    return sum(2 * m.shape[0] * m.shape[1] for m in _matrices(model))
