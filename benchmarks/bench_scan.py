"""The minGRU's recurrence on a CPU: gentext's sequential scan against the paper's log-space
parallel scan, forward and backward, at training sizes.

    python benchmarks/bench_scan.py            # B 16 and 32, T 64, H 256 (the default training window)
    python benchmarks/bench_scan.py --tiny     # seconds (the test suite)

h_t = a_t h_(t-1) + b_t over a window. gentext (models/mingru.py, `LinearScan`): T fused `addcmul`s
forward and the adjoint recurrence backward. The baseline is the log-space scan of Feng et al.
(2024) after Heinsen (2023), as the paper's code writes it in plain PyTorch: cumsum of log a, then
`logcumsumexp`, autograd for the backward. Both compute the same h (the table's last column), in
the same invocation, one thread count.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from gentext.models.mingru import LinearScan


def log_space_scan(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
    """h (B, T, H) by Heinsen's scan: log h_t = A_t + logcumsumexp(log b_s - A_s), A = cumsum log a
    (every term positive: a = 1 - z, b = z g(x) and h0 > 0)."""
    log_a = torch.cumsum(torch.log(a), dim=1)
    log_a = torch.cat([torch.zeros_like(log_a[:, :1]), log_a], dim=1)
    log_b = torch.cat([torch.log(h0)[:, None], torch.log(b)], dim=1)
    return torch.exp(log_a + torch.logcumsumexp(log_b - log_a, dim=1))[:, 1:]


def timed(scan, a, b, h0, repeats: int) -> tuple[float, torch.Tensor]:
    """Milliseconds per forward + backward, and the forward's h."""
    for _ in range(2):  # warm-up
        scan(a, b, h0).sum().backward()
    start = time.perf_counter()
    for _ in range(repeats):
        h = scan(a, b, h0)
        h.sum().backward()
    return (time.perf_counter() - start) / repeats * 1000, h.detach()


def inputs(batch: int, steps: int, hidden: int):
    g = torch.Generator().manual_seed(0)
    z = torch.sigmoid(torch.randn(batch, steps, hidden, generator=g))
    a = (1 - z).requires_grad_()
    b = (z * (torch.rand(batch, steps, hidden, generator=g) + 0.1)).requires_grad_()
    h0 = (torch.rand(batch, hidden, generator=g) + 0.1).requires_grad_()
    return a, b, h0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="small sizes, few repeats")
    args = parser.parse_args()
    sizes = [(4, 16, 32)] if args.tiny else [(16, 64, 256), (32, 64, 256), (16, 128, 256)]
    repeats = 3 if args.tiny else 50
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2 only"
    print(f"{platform.machine()}, {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print("| B x T x H | log-space scan (plain PyTorch), ms | gentext LinearScan, ms | speed-up | max abs diff of h |")
    print("|---|---:|---:|---:|---:|")
    for batch, steps, hidden in sizes:
        a, b, h0 = inputs(batch, steps, hidden)
        plain, h_plain = timed(log_space_scan, a, b, h0, repeats)
        ours, h_ours = timed(LinearScan.apply, a, b, h0, repeats)
        diff = (h_plain - h_ours).abs().max().item()
        print(f"| {batch} x {steps} x {hidden} | {plain:.2f} | {ours:.2f} | {plain / ours:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
