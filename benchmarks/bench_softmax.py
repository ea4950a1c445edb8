"""How much of a word-level training step the output softmax costs at WikiText-2's vocabulary.

    python benchmarks/bench_softmax.py                 # 2x650 tied LSTM, vocab 33,278, batch 20 x 35
    python benchmarks/bench_softmax.py --tiny

Times forward + backward of (a) gentext's model with a full softmax (fused log-softmax
cross-entropy), (b) with `--adaptive-softmax 2000,10000`, and (c) the recurrent stack without
any output layer, and reports the output layer's share of each. Baseline in the same invocation:
the plain-PyTorch way of writing it, softmax then log then NLL. Targets follow Zipf's law over the
frequency-sorted vocabulary (P(rank r) ~ 1/r), as words in running text do; uniform targets
would put nearly every target in the rare clusters.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch
import torch.nn.functional as F

from gentext.config import ModelConfig
from gentext.models import build_model


def timed(fn, repeats: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    vocab, hidden, batch, seq, repeats = (2000, 64, 4, 16, 2) if args.tiny else (33_278, 650, 20, 35, 5)
    cutoffs = [vocab // 16, vocab * 5 // 16] if args.tiny else [2000, 10000]
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=vocab, embed_size=hidden, hidden_size=hidden, tie_weights=True)
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

    t_full, t_naive, t_rnn = timed(full_step, repeats), timed(naive_step, repeats), timed(recurrent_only, repeats)
    t_adaptive = timed(adaptive_step, repeats)
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
