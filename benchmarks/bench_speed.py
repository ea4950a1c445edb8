"""Training and generation speed of gentext against a plain-PyTorch baseline, in one invocation.

    python benchmarks/bench_speed.py             # 2x512 char LSTM, batch 64, window 128 (issue 5's setting)
    python benchmarks/bench_speed.py --tiny      # seconds; what the test suite runs

Each measurement runs in its own subprocess so that peak memory (max RSS) is its own. The baseline
is the loop a competent user writes by hand: float32 `nn.LSTM`, Adam, truncated BPTT with the
state carried; generation calls `nn.LSTM` once per token. gentext runs its own trainer
(`gentext.training.trainer.train`, default precision) and sampler on the same text, model size and batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_generation import PlainLSTM  # noqa: E402  (the same baseline model)

SIZES = {
    "full": dict(hidden=512, embed=512, layers=2, batch=64, seq=128, steps=6, tokens=100),
    "tiny": dict(hidden=32, embed=16, layers=1, batch=4, seq=16, steps=3, tokens=10),
}


def corpus_ids() -> tuple[np.ndarray, list[str]]:
    from gentext.data.corpus import load_builtin

    text = load_builtin("python-docs")
    chars = sorted(set(text))
    lookup = {c: i for i, c in enumerate(chars)}
    return np.array([lookup[c] for c in text], dtype=np.uint8), chars


def train_plain(size: dict, ids: np.ndarray, vocab: int) -> float:
    torch.manual_seed(0)
    model = PlainLSTM(vocab, size["embed"], size["hidden"], size["layers"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch, seq = size["batch"], size["seq"]
    rows = torch.from_numpy(ids[: len(ids) // batch * batch].astype(np.int64)).view(batch, -1)
    state, start = None, None
    for step in range(size["steps"] + 1):
        if step == 1:
            start = time.perf_counter()  # the first step warms up allocators and kernels
        x, y = rows[:, step * seq : (step + 1) * seq], rows[:, step * seq + 1 : (step + 1) * seq + 1]
        if state is not None:
            state = tuple(s.detach() for s in state)
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return size["steps"] * batch * seq / (time.perf_counter() - start)


def gentext_config(size: dict, vocab: int):
    """The same 2-layer LSTM as the plain model, as gentext builds it."""
    from gentext.config import ModelConfig

    return ModelConfig(
        kind="lstm", vocab_size=vocab, embed_size=size["embed"], hidden_size=size["hidden"], num_layers=size["layers"]
    )


def train_gentext(size: dict, ids: np.ndarray, vocab: int) -> float:
    from gentext.config import TrainConfig
    from gentext.models import build_model
    from gentext.training.defaults import LEARNING_RATE
    from gentext.training.feeds import WindowFeed
    from gentext.training.trainer import train

    torch.manual_seed(0)
    model = build_model(gentext_config(size, vocab))
    config = TrainConfig(
        batch_size=size["batch"],
        seq_len=size["seq"],
        steps=size["steps"] + 1,
        eval_every=10**6,
        save_every=10**6,
        learning_rate=LEARNING_RATE,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        feed = lambda rows: WindowFeed(ids, None, config, rows)  # noqa: E731
        result = train(model, feed, config, Path(run_dir), torch.device("cpu"), progress=False)
    return result.tokens_per_second


def generate(size: dict, vocab: int, streams: int, which: str) -> float:
    from bench_generation import plain_generate

    from gentext.api import TextModel
    from gentext.conditions import Condition
    from gentext.data.tokenizers import CharTokenizer
    from gentext.models import build_model
    from gentext.runconfig import RunConfig

    torch.manual_seed(0)
    baseline = PlainLSTM(vocab, size["embed"], size["hidden"], size["layers"]).eval()
    tokens = size["tokens"]
    start = time.perf_counter()
    if which == "plain":  # the hand-written loop: nn.LSTM on (streams, 1) per token
        plain_generate(baseline, tokens, streams, 0)
    else:
        net = build_model(gentext_config(size, vocab))
        net.load_state_dict(baseline.state_dict())
        chars = [chr(32 + i) for i in range(vocab)]
        model = TextModel(net.eval(), CharTokenizer(chars), RunConfig(), condition=Condition())
        model.set_weights("auto")  # what `gentext generate` and `serve` use by default
        start = time.perf_counter()
        model.generate(" ", max_new_tokens=tokens, num_samples=streams, temperature=1.0, seed=0)
    return streams * tokens / (time.perf_counter() - start)


def run_part(part: str, size_name: str) -> None:
    size = SIZES[size_name]
    ids, chars = corpus_ids()
    kind, which = part.split(":")
    if kind == "train":
        rate = (train_plain if which == "plain" else train_gentext)(size, ids, len(chars))
    else:
        rate = generate(size, len(chars), int(kind.removeprefix("gen")), which)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"tokens_per_second": rate, "peak_rss_mb": peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--part", help=argparse.SUPPRESS)
    args = parser.parse_args()
    size_name = "tiny" if args.tiny else "full"
    if args.part:
        run_part(args.part, size_name)
        return
    results = {}
    for part in ("train:plain", "train:gentext", "gen1:plain", "gen1:gentext", "gen64:plain", "gen64:gentext"):
        command = [sys.executable, __file__, "--part", part] + (["--tiny"] if args.tiny else [])
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[part] = json.loads(out.strip().splitlines()[-1])
    s = SIZES[size_name]
    print(
        f"{s['layers']}x{s['hidden']} char LSTM (embed {s['embed']}), batch {s['batch']} x window {s['seq']}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.machine()}"
    )
    print("| measure | plain PyTorch | gentext | ratio | peak RSS plain / gentext (MB) |")
    print("|---|---:|---:|---:|---:|")
    for label, key in (
        ("training tokens/s", "train"),
        ("generation tokens/s, 1 stream", "gen1"),
        ("generation tokens/s, 64 streams", "gen64"),
    ):
        plain, ours = results[f"{key}:plain"], results[f"{key}:gentext"]
        print(
            f"| {label} | {plain['tokens_per_second']:,.0f} | {ours['tokens_per_second']:,.0f} | "
            f"{ours['tokens_per_second'] / plain['tokens_per_second']:.2f}x | "
            f"{plain['peak_rss_mb']:,.0f} / {ours['peak_rss_mb']:,.0f} |"
        )


if __name__ == "__main__":
    main()
