"""Which int8 kernel for the generation step (issue 27: torchao vs fbgemm), against float32, in one run.

    python benchmarks/bench_int8.py            # the 2x512 LSTM step's two matrices, 1 and 64 rows
    python benchmarks/bench_int8.py --tiny     # seconds (the test suite)

One call of x (rows, K) @ W^T + b, W (2048, K) as the 2x512 char LSTM's step has them (K = 512:
layer 0's recurrent matrix, K = 1024: layer 1's fused [W_ih, W_hh]), microseconds per call (best
of 5 rounds), for each kernel PyTorch offers on a CPU:

- fp32 `addmm` (MKL/oneDNN): the baseline;
- fbgemm `quantized::linear_dynamic`: int8 weights per channel, activations quantized per call
  (what gentext uses: models/weights.py);
- fbgemm `quantized::linear_dynamic_fp16`: fp16 weights, fp32 arithmetic;
- oneDNN `onednn::qlinear_pointwise`: int8 weights, activations quantized with a fixed scale
  (PyTorch's x86 inductor path, called eagerly);
- `aten::_weight_int8pack_mm`: int8 weights only;
- torchao's `Int8DynamicActivationInt8WeightConfig` and `Int8WeightOnlyConfig` on an `nn.Linear`,
  eager (no `torch.compile`), where torchao is installed (`pip install torchao`).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from pathlib import Path

import torch

warnings.simplefilter("ignore")  # quantized constructors and torchao announce deprecations


def per_call_us(fn, calls: int) -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def kernels(weight: torch.Tensor, bias: torch.Tensor) -> dict:
    """name -> fn(x) for every kernel that runs here."""
    n, k = weight.shape
    scales = weight.abs().amax(dim=1) / 127
    q = torch.quantize_per_channel(weight, scales.double(), torch.zeros(n, dtype=torch.long), 0, torch.qint8)
    packed = torch.ops.quantized.linear_prepack(q, bias)
    packed16 = torch.ops.quantized.linear_prepack_fp16(weight, bias)
    w8 = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
    found = {
        "fp32 addmm (baseline)": lambda x: torch.addmm(bias, x, weight.t()),
        "fbgemm int8 dynamic (gentext)": lambda x: torch.ops.quantized.linear_dynamic(x, packed, True),
        "fbgemm fp16 weights": lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed16),
        "aten _weight_int8pack_mm": lambda x: torch._weight_int8pack_mm(x, w8, scales),
    }
    try:
        onednn = torch.ops.onednn.qlinear_prepack(w8, [1, k])
        zeros = torch.zeros(n, dtype=torch.long)

        def static(x):
            xq = torch.quantize_per_tensor(x, 1 / 127, 128, torch.quint8).int_repr()
            return torch.ops.onednn.qlinear_pointwise(
                xq, 1 / 127, 128, onednn, scales, zeros, bias, 1.0, 0, torch.float32, "none", [], ""
            )

        found["oneDNN int8, static activations"] = static
    except (RuntimeError, AttributeError):
        pass
    found.update(_torchao(weight, bias))
    return found


def _torchao(weight: torch.Tensor, bias: torch.Tensor) -> dict:
    try:
        import torchao.quantization as ao
    except ImportError:
        return {}
    found = {}
    for label, config in (("torchao int8 dynamic (eager)", "Int8DynamicActivationInt8WeightConfig"),
                          ("torchao int8 weight-only (eager)", "Int8WeightOnlyConfig")):  # fmt: skip
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            linear.weight.copy_(weight)
            linear.bias.copy_(bias)
        holder = torch.nn.Sequential(linear)
        ao.quantize_(holder, getattr(ao, config)())
        found[label] = holder
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="few calls (smoke test)")
    args = parser.parse_args()
    torch.manual_seed(0)
    shapes = [(2048, 512), (2048, 1024)]
    results, names = {}, []
    for n, k in shapes:
        weight, bias = torch.randn(n, k) * 0.05, torch.randn(n) * 0.1
        for name, fn in kernels(weight, bias).items():
            names.append(name) if name not in names else None
            for rows in (1, 64):
                x = torch.rand(rows, k) * 2 - 1
                calls = 3 if args.tiny else (300 if rows == 1 else 30)
                with torch.inference_mode():
                    fn(x)  # the first call may pack or dispatch
                    results[(name, k, rows)] = per_call_us(lambda fn=fn, x=x: fn(x), calls)
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2 only"
    print(f"µs per call, {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| kernel | 2048x512, 1 row | 2048x1024, 1 row | 2048x512, 64 rows | 2048x1024, 64 rows | vs fp32, 1 row |")
    print("|---|---:|---:|---:|---:|---:|")
    base = results[(names[0], 1024, 1)]
    for name in names:
        cells = [results.get((name, k, rows)) for rows in (1, 64) for _, k in shapes]
        shown = " | ".join("n/a" if c is None else f"{c:,.0f}" for c in cells)
        ratio = results.get((name, 1024, 1))
        print(f"| {name} | {shown} | {'n/a' if ratio is None else f'{base / ratio:.2f}x'} |")


if __name__ == "__main__":
    main()
