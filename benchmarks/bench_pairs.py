"""Seq2seq training throughput: gentext's training loop beside plain PyTorch loops of the same model.

    python benchmarks/bench_pairs.py                # 60 s per side, the number-to-words task
    python benchmarks/bench_pairs.py --seconds 10   # a quick look

The same bi-GRU + Luong-attention model (gentext's `Seq2SeqModel`, default sizes) and the same pairs,
trained three ways for the same wall time, in this one invocation:
- plain, one pair at a time: the PyTorch seq2seq tutorial's way (encode one source, teacher-forced
  decoder over one target, one optimizer step per pair);
- plain, batched: random padded batches, masked loss, AdamW + clipping, hand-written;
- gentext: `gentext.train(..., condition="source")`, the one training loop (checkpoints, validation,
  the non-finite guard, resume state included in its time).
Target tokens per second (END included) for each, and the ratios. The CPU is named above the table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import gentext
from gentext.config import ModelConfig
from gentext.data.conditions import cut_pairs, pair_ids, paired_documents
from gentext.hardware import cpu_report
from gentext.models import build_model
from gentext.models.scoring import batch as pair_batch

sys.path.insert(0, str(Path(__file__).parent))
from bench_conditional import numbers_file  # noqa: E402 -- the same task as the conditional benchmark

BATCH = 16  # gentext's default --batch-size, for both batched loops


def _pairs(path: Path):
    run = Path(tempfile.mkdtemp()) / "probe"  # the run's tokenizer and pairs, exactly as gentext cuts them
    gentext.train(run, paths=[str(path)], condition="source", steps=1, eval_every=10**6)
    model = gentext.load(run)
    ids = pair_ids(model.tokenizer)
    text = paired_documents(path.read_text())  # `source SOURCE_END target` lines, as the corpus reader writes them
    return model.model.config, cut_pairs(model.tokenizer.encode(text), ids[1], ids[0]), ids


def _plain(config: ModelConfig, pairs, ids, seconds: float, batch: int) -> float:
    torch.manual_seed(0)
    model = build_model(ModelConfig(**{**config.__dict__, "dropout": 0.0})).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng, tokens, start = np.random.default_rng(0), 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        chosen = [pairs[i] for i in rng.integers(0, len(pairs), batch)]
        condition, dec_in, dec_out, mask = pair_batch(chosen, *ids, "cpu")
        logp, _ = model(dec_in, model.initial_state(batch, condition=condition), targets=dec_out)
        loss = -logp[mask].mean()
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        tokens += int(mask.sum())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    print(cpu_report())
    with tempfile.TemporaryDirectory() as tmp:
        path = numbers_file(Path(tmp) / "numbers.tsv", 5000)
        config, pairs, ids = _pairs(path)
        one = _plain(config, pairs, ids, args.seconds, batch=1)
        batched = _plain(config, pairs, ids, args.seconds, batch=BATCH)
        summary = gentext.train(
            Path(tmp) / "run", paths=[str(path)], condition="source", time_limit=args.seconds, batch_size=BATCH
        )
    rows = [("plain PyTorch, one pair at a time (tutorial)", one), ("plain PyTorch, batched", batched)]
    rows.append(("gentext train (the one loop)", summary["tokens_per_second"]))
    print("\n| loop | target tokens/s | vs one pair at a time | vs plain batched |\n|---|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / one:.1f}x | {rate / batched:.2f}x |")


if __name__ == "__main__":
    main()
