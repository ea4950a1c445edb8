"""How much of a word-level training step the output softmax costs at WikiText-2's vocabulary.

    python benchmarks/bench_softmax.py                 # 2x650 tied LSTM, vocab 33,278, batch 20 x 35
    python benchmarks/bench_softmax.py --ptb           # --preset ptb-cpu's model: 2x256, vocab 10,000
    python benchmarks/bench_softmax.py --tiny

Times forward + backward of (a) gentext's model with a full softmax (fused log-softmax
cross-entropy), (b) with `--adaptive-softmax 2000,10000` (2000,6000 with --ptb), and (c) the
recurrent stack without any output layer, and reports the output layer's share of each. Baseline in the same invocation:
the plain-PyTorch way of writing it, softmax then log then NLL. Targets follow Zipf's law over the
frequency-sorted vocabulary (P(rank r) ~ 1/r), as words in running text do; uniform targets
would put nearly every target in the rare clusters. The steps are timed in turn, round after
round, and each reports its median: this machine's speed drifts by 10% within minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
import torch.nn.functional as F

from gentext.config import ModelConfig
from gentext.models import build_model


def timed(fns: list, repeats: int) -> list[float]:
    """Median seconds per call of each function, timed in interleaved rounds."""
    for fn in fns:
        fn()  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, record in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            record.append(time.perf_counter() - start)
    return [statistics.median(record) for record in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--ptb", action="store_true", help="Penn Treebank's vocabulary and --preset ptb-cpu's model")
    size.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        vocab, hidden, batch, seq, repeats, cutoffs = 2000, 64, 4, 16, 2, [125, 625]
    elif args.ptb:
        vocab, hidden, batch, seq, repeats, cutoffs = 10_000, 256, 20, 35, 30, [2000, 6000]
    else:
        vocab, hidden, batch, seq, repeats, cutoffs = 33_278, 650, 20, 35, 7, [2000, 10000]
    torch.manual_seed(0)
    config = ModelConfig(kind="lstm", vocab_size=vocab, embed_size=hidden, hidden_size=hidden, tie_weights=True)
    model = build_model(config)
    adaptive = build_model(dataclasses.replace(config, adaptive_cutoffs=cutoffs))
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)
    x = torch.multinomial(zipf, batch * seq, replacement=True).view(batch, seq)
    y = torch.multinomial(zipf, batch * seq, replacement=True).view(batch, seq)

    def full_step():
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        F.cross_entropy(logits.flatten(0, 1), y.flatten()).backward()

    def naive_step():  # the hand-written way: probabilities first, then their log
        model.zero_grad(set_to_none=True)
        logits, _ = model(x)
        probs = torch.softmax(logits.flatten(0, 1), dim=-1)
        F.nll_loss(torch.log(probs), y.flatten()).backward()

    def adaptive_step():
        adaptive.zero_grad(set_to_none=True)
        logp, _ = adaptive(x, targets=y)
        (-logp.mean()).backward()

    def recurrent_only():
        model.zero_grad(set_to_none=True)
        out, _ = model.rnn(model.embedding(x))
        out.sum().backward()

    t_full, t_naive, t_rnn, t_adaptive = timed([full_step, naive_step, recurrent_only, adaptive_step], repeats)
    tokens = batch * seq
    print(f"2x{hidden} tied LSTM, vocab {vocab:,}, batch {batch} x {seq}, torch {torch.__version__}")
    print("| step | ms | tokens/s |")
    print("|---|---:|---:|")
    for name, t in (
        ("plain: softmax, log, NLL", t_naive),
        ("gentext, full softmax: fused cross-entropy", t_full),
        (f"gentext, --adaptive-softmax {','.join(map(str, cutoffs))}", t_adaptive),
        ("recurrent stack only (no output layer)", t_rnn),
    ):
        print(f"| {name} | {t * 1000:.1f} | {tokens / t:,.0f} |")
    print(
        f"output layer share of the step: full softmax {(t_full - t_rnn) / t_full:.0%}, "
        f"adaptive {max(t_adaptive - t_rnn, 0) / t_adaptive:.0%}; adaptive vs plain: {t_naive / t_adaptive:.2f}x faster"
    )


if __name__ == "__main__":
    main()
