"""The documented recipes: option values (config field names) that `--preset NAME` (and
`gentext.train(preset=NAME)`) supply unless given. Each names its kind; the figures they reach are
in benchmarks/RESULTS.md."""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    # Tiny Shakespeare on a 2-core CPU: a 2x512 LSTM with small batches for many updates per minute,
    # the cosine schedule fitted to 10 minutes (benchmarks/RESULTS.md has what it reaches).
    "shakespeare-cpu": dict(
        kind="lstm",
        hidden_size=512,
        num_layers=2,
        embed_size=64,
        batch_size=16,
        seq_len=64,
        learning_rate=4e-3,
        dropout=0.0,  # five passes over the text in 10 minutes: regularising only slows it
        time_limit=600.0,
        eval_every=400,
        # Tiny Shakespeare names its speakers every few lines (what a cache is for, RESULTS.md);
        # validation chooses 1,000, 2,000 or 4,000 outputs
        cache_window=4000,
    ),
    # Penn Treebank (pre-tokenized words) on a 2-core CPU in 15 minutes: a tied 2x256 LSTM with an
    # adaptive softmax (far faster than a full one at 10k words, RESULTS.md) and plain SGD at lr 20,
    # clip 0.25, batch 20.
    # Six epochs leave it under-trained, so it is lightly regularised (dropout 0.1), and no stream
    # starts cold: PTB is scored as one carried stream, never from a zero state. Few periodic
    # evaluations: each costs seconds of the 15 minutes.
    "ptb-cpu": dict(
        kind="lstm",
        level="word",
        tokenize="whitespace",
        hidden_size=256,
        embed_size=256,
        num_layers=2,
        tie_weights=True,
        dropout=0.1,
        adaptive_cutoffs=[2000, 6000],
        batch_size=20,
        seq_len=35,
        optimizer="sgd",
        learning_rate=20.0,
        grad_clip=0.25,
        time_limit=900.0,
        eval_every=4000,
        save_every=4000,
        state_reset=0.0,
        cache_window=500,  # a story's companies and people recur (RESULTS.md)
    ),
    # The Transformer for Tiny Shakespeare on a 2-core CPU (nanoGPT's family): 4 layers x 192 wide,
    # 6 heads, windows of 128 characters = its context, no dropout (6 epochs in 10 minutes do not
    # overfit a 1.8M-parameter model), bf16 where the CPU has it.
    "transformer-shakespeare-cpu": dict(
        kind="transformer",
        num_layers=4,
        hidden_size=192,
        num_heads=6,
        context=128,
        seq_len=128,
        batch_size=16,
        learning_rate=2e-3,
        warmup_steps=100,
        dropout=0.0,
        time_limit=600.0,
        eval_every=500,
    ),
    # The Transformer for Penn Treebank words: 4 x 256 with the adaptive softmax of ptb-cpu (tied),
    # a 64-word context, dropout 0.2 (a 10k vocabulary overfits sooner than characters).
    "transformer-ptb-cpu": dict(
        level="word",
        tokenize="whitespace",
        kind="transformer",
        num_layers=4,
        hidden_size=256,
        num_heads=4,
        context=64,
        seq_len=64,
        batch_size=16,
        dropout=0.2,
        adaptive_cutoffs=[2000, 6000],
        learning_rate=1e-3,
        warmup_steps=200,
        time_limit=900.0,
        eval_every=2000,
        save_every=2000,
    ),
}
