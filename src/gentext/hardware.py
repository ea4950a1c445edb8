"""Devices and numeric precision: where the model runs and whether autocast is on."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import os
import time
from pathlib import Path

import torch

from gentext.errors import GentextError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GentextError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _cpu_flags() -> set[str]:
    try:
        return set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return set()


# oneDNN's ISA names in rising order (ONEDNN_MAX_CPU_ISA / DNNL_MAX_CPU_ISA): a cap below the one a
# dtype needs makes oneDNN refuse or emulate that dtype, whatever /proc/cpuinfo says.
ONEDNN_ISAS = (
    "SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI", "AVX512_CORE_BF16",
    "AVX10_1_512", "AVX512_CORE_FP16", "AVX10_1_512_AMX", "AVX512_CORE_AMX", "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
)  # fmt: skip
NEEDS = {  # dtype: (CPU flags, any of which does it natively; the lowest oneDNN ISA that uses them)
    torch.bfloat16: (("avx512_bf16", "amx_bf16"), "AVX512_CORE_BF16"),
    torch.float16: (("avx512_fp16", "amx_fp16"), "AVX10_1_512"),
}
CAPS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY", "FBGEMM_ENABLE_INSTRUCTIONS")


def _capped_below(isa: str) -> bool:
    """Do the environment's caps hold the libraries below `isa`? (ATen's avx2/default cap counts:
    a developer who set it wants to see what an AVX2 CPU does.)"""
    onednn = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if onednn in ONEDNN_ISAS and ONEDNN_ISAS.index(onednn) < ONEDNN_ISAS.index(isa):
        return True
    return os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("default", "avx", "avx2")


def cpu_native(dtype: torch.dtype) -> bool:
    """Does this CPU multiply in `dtype` natively, as the libraries are allowed to use it? Emulated
    bf16/fp16 matmuls are orders of magnitude slower than float32 (and oneDNN has no emulated bf16 LSTM at
    all), so neither "auto" nor an explicit flag may pick them on such a CPU."""
    if dtype not in NEEDS:
        return True
    flags, isa = NEEDS[dtype]
    return any(f in _cpu_flags() for f in flags) and not _capped_below(isa)


def cpu_report() -> dict[str, object]:
    """The CPU features gentext's choices depend on, and the caps in force (for `gentext doctor`)."""
    flags = _cpu_flags()
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")
    return {
        "features": [f for f in wanted if f in flags],
        "caps": {name: os.environ[name] for name in CAPS if os.environ.get(name)},
        "native_bf16": cpu_native(torch.bfloat16),
        "native_fp16": cpu_native(torch.float16),
    }


@functools.cache
def bf16_pays() -> bool:
    """Does a bf16 product run faster than float32's here, measured once a process? The instructions
    are not enough: on an Intel Xeon with AVX-512 BF16 and no AMX, oneDNN's bf16 products ran at half
    float32's speed and the default LSTM trained 25% slower in bf16 (benchmarks/RESULTS.md), where on
    the Zen 4 bf16 trains faster. One product of a training step's size each way, about 50 ms."""
    a, b = torch.randn(512, 1024), torch.randn(1024, 1024)

    def best(x: torch.Tensor, y: torch.Tensor) -> float:
        torch.mm(x, y)  # oneDNN builds its kernel on the first call
        times = []
        for _ in range(4):
            start = time.perf_counter()
            torch.mm(x, y)
            times.append(time.perf_counter() - start)
        return min(times)

    return best(a.bfloat16(), b.bfloat16()) < 0.9 * best(a, b)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of training steps, or None for plain float32 (evaluation and generation
    always run in float32). fp16 trains with a GradScaler (see trainer)."""
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_native(torch.bfloat16) and bf16_pays() else None
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if device.type == "cpu" and not cpu_native(dtype):
        need = "AVX-512 BF16 or AMX" if dtype == torch.bfloat16 else "AVX-512 FP16 or AMX-FP16"
        raise GentextError(
            f"--precision {precision}: this CPU has no native {precision} ({need}); emulated it is far slower "
            "than float32. Use --precision fp32 or auto"
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise GentextError("--precision bf16: this GPU has no bf16; use --precision fp16 or auto")
    return dtype


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def release_memory() -> None:
    """Hand freed heap memory back to the system between phases (the encoding pass's buffers, the
    training steps' activations before the final evaluation). glibc keeps freed blocks for reuse,
    so a big corpus's run held the encoding pass's buffers to its end (benchmarks/RESULTS.md, "A 1 GB
    corpus"). A no-op where the C library has no malloc_trim."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


DIRECT_L2_BYTES = 2 << 20  # the smallest L2 a core on which a lone row's own int8 product was measured faster


def l2_bytes() -> int:
    """The L2 cache of the first CPU, in bytes (0 where the system does not say)."""
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == "2":
                size = (index / "size").read_text().strip().upper()
                return int(size.rstrip("KMG")) << {"K": 10, "M": 20, "G": 30}.get(size[-1:], 0)
        except (OSError, ValueError):
            continue
    return 0


def direct_int8(scaled: bool = False) -> str | None:
    """Which ISA the compiled kernels may make a lone row's int8 products with themselves
    (native/direct.h): "avx512" (VNNI) or "avx2"; None where fbgemm makes them.

    A bounded product (a recurrent state's) is the kernels' where a core's L2 holds its half of a
    2 x 512 LSTM's weights: there the product is bound by fbgemm's work per call, which the kernels
    leave out; on a 1 MB L2 the weights come from L3 either way and the kernels' product was no
    faster. A `scaled` product (each row divided by its largest value first: a minGRU's, a
    Transformer's) is the kernels' on any L2: through fbgemm it also takes the ATen calls that
    scale each row and multiply it back, which the kernels do in their loops (benchmarks/RESULTS.md).
    Under a cap that holds ATen, oneDNN or fbgemm below VNNI it is AVX2's: whoever set one wants
    to see a CPU without it."""
    flags, fbgemm = _cpu_flags(), os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").upper()
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    if not scaled and l2_bytes() < DIRECT_L2_BYTES:
        return None
    if (
        {"avx512f", "avx512bw", "avx512_vnni"} <= flags
        and torch.backends.cpu.get_cpu_capability() == "AVX512"
        and not _capped_below("AVX512_CORE_VNNI")
        and (not fbgemm or "VNNI" in fbgemm)
    ):
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= flags else None
