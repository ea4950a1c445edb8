"""bench_generation.py's report: what ran on this machine, and the speed table."""

from __future__ import annotations

import platform

import torch
from roofline import cpu_features

from gentext import native, threads
from gentext.hardware import cpu_native, direct_int8


def print_header(cfg, args) -> None:
    """The model, the machine and the compiled kernels' paths that ran."""
    print(
        f"generation, {cfg.num_layers}x{cfg.hidden_size} {cfg.kind}, vocab {cfg.vocab_size}, {args.tokens} tokens per "
        f"stream, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, CPU features: {cpu_features()}"
        + ("" if cpu_native(torch.bfloat16) else " (bf16 emulated: not measured)")
        + f"; per-token kernels: {native.status()}"
        + "".join(f"; {what}" for what, ran in kernel_paths().items() if ran and native.kernels())
    )


def kernel_paths() -> dict[str, bool | str | None]:
    """What the compiled kernels do on this machine, beside whether they ran (RESULTS names them)."""
    return {
        "a lone row's products on two cores": threads.describe()["second_core"],
        "a batch's cell on torch's OpenMP threads": bool(native.openmp()),
        f"a lone row's int8 products by the kernels' own ({direct_int8()})": direct_int8(),
        f"a lone row's scaled int8 products (minGRU, Transformer) by the kernels' own ({direct_int8(scaled=True)})": (
            direct_int8() is None and direct_int8(scaled=True)
        ),
    }


def print_speed(rows: list[dict], base_one: float, base_many: float, args) -> None:
    print(
        f"\nplain PyTorch nn.LSTM per token: 1 stream {base_one:,.0f} tokens/s, {args.streams} streams {base_many:,.0f}"
    )
    quality = "loss" in rows[0]
    print(
        f"| weights | 1 stream tokens/s | vs plain | {args.streams} streams tokens/s | vs plain |"
        + (" held-out loss | vs fp32 | greedy chars = fp32 |" if quality else "")
    )
    print("|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if quality else ""))
    for r in rows:
        line = (
            f"| {r['format']} | {r['one']:,.0f} | {r['one'] / base_one:.1f}x | {r['many']:,.0f} | "
            f"{r['many'] / base_many:.1f}x |"
        )
        if quality:
            line += f" {r['loss']:.4f} | {r['loss'] - rows[0]['loss']:+.4f} | {r['greedy_same']}/300 |"
        print(line)
