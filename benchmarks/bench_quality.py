"""Quality per minute on a user's small text (issue 30): gentext's default command with a time
limit, against its own Kneser-Ney chain and a plain PyTorch LSTM loop given the same minutes.

    python benchmarks/bench_quality.py                 # three 100 KB texts, 3 minutes per network
    python benchmarks/bench_quality.py --minutes 1     # quicker, same table
    python benchmarks/bench_quality.py --tiny          # seconds: 20 KB texts, 5-second budgets (the test suite)

Each text is 100 KB cut from a corpus in ../shared/data (Tiny Shakespeare, WikiText-2, PTB; the
built-in corpus where they are absent), split by lines into train (80%), validation (10%) and
test (10%). gentext and the chain read train and validation (the validation text picks the best
weights and the mixture weight); every figure is nats per character on the test text, which no
run has seen. gentext's row is the model `gentext.load` gives (its network mixed with a chain:
models/mixture.py); its network alone is shown beside it.

Baseline: the loop a competent user writes (pytorch/examples word_language_model, at character
level): 2-layer LSTM 512 wide, Adam 2e-3, batches of 32 x 128 with the state carried, for the
same minutes; scored on the test text with its state carried.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import gentext
from gentext.data.corpus import load_builtin
from gentext.inference.textmodel import TextModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTS = {"tinyshakespeare": DATA / "tinyshakespeare.txt", "wikitext-2": DATA / "wikitext-2" / "train.txt"}
TEXTS["ptb"] = DATA / "ptb" / "ptb.train.txt"


def cut(name: str, size: int) -> tuple[str, str, str]:
    """train, validation and test text: `size` characters from the middle of a corpus, cut at lines."""
    path = TEXTS[name]
    text = path.read_text(encoding="utf-8") if path.exists() else load_builtin("python-docs")
    start = text.index("\n", len(text) // 3) + 1
    text = text[start : start + size]
    text = text[: text.rindex("\n") + 1]
    a, b = (text.index("\n", int(len(text) * f)) + 1 for f in (0.8, 0.9))
    return text[:a], text[a:b], text[b:]


class PlainLSTM(nn.Module):
    def __init__(self, vocab: int):
        super().__init__()
        self.embedding, self.rnn, self.head = nn.Embedding(vocab, 512), nn.LSTM(512, 512, 2), nn.Linear(512, vocab)

    def forward(self, x, state=None):
        y, state = self.rnn(self.embedding(x), state)
        return self.head(y), state


def plain_loss(train: str, test: str, seconds: float) -> float:
    """Train the plain loop for `seconds`, then its nats/char on the test text (unknown chars skipped)."""
    chars = sorted(set(train))
    index = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([index[c] for c in train])
    torch.manual_seed(0)
    model, batch, window = PlainLSTM(len(chars)), 32, 128
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    rows = data[: len(data) // batch * batch].view(batch, -1).t()  # (T, B)
    state, pos, deadline = None, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pos + window + 1 > rows.shape[0]:
            state, pos = None, 0
        x, y = rows[pos : pos + window], rows[pos + 1 : pos + window + 1]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.view(-1, len(chars)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        pos += window
    ids = torch.tensor([index[c] for c in test if c in index])[:, None]
    with torch.inference_mode():
        logits, _ = model(ids[:-1])
        return nn.functional.cross_entropy(logits.view(-1, len(chars)), ids[1:, 0]).item()


def row(name: str, size: int, budget: str, seconds: float, root: Path) -> dict:
    train, val, test = cut(name, size)
    files = {}
    for part, text in (("train", train), ("val", val)):
        files[part] = root / f"{name}.{part}.txt"
        files[part].write_text(text, encoding="utf-8")
    common = dict(paths=[str(files["train"])], val_path=str(files["val"]), force=True)
    gentext.train(root / f"{name}-markov", model="markov", **common)
    start = time.perf_counter()
    gentext.train(root / f"{name}-lstm", time_limit=seconds, **common)
    took = time.perf_counter() - start
    mixed, chain = gentext.load(root / f"{name}-lstm"), gentext.load(root / f"{name}-markov")
    net = TextModel(getattr(mixed.model, "net", mixed.model), mixed.tokenizer, mixed.config)
    models = {"gentext": mixed, "net": net, "markov": chain}
    scores = {key: model.score(test, unknown="skip")["loss"] for key, model in models.items()}
    scores["plain"] = plain_loss(train, test, seconds)
    mix = mixed.config.get("mixture") or {}
    return {"name": name, "budget": budget, "took": took, "chars": len(train), "mix": mix, **scores}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes per network")
    parser.add_argument("--size", type=int, default=100_000, help="characters per text")
    parser.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--tiny", action="store_true", help="20 KB texts, 5-second budgets (smoke test)")
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.size, args.texts = 5 / 60, 20_000, args.texts[:1]
    budget = f"{args.minutes:g} min" if args.minutes >= 1 else f"{args.minutes * 60:.0f} s"
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row(name, args.size, budget, args.minutes * 60, Path(tmp)) for name in args.texts]
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2 only"
    print(
        f"held-out nats/char on the test tenth of each text; {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print("| text | train chars | budget | gentext (mixed) | network alone | Markov (KN, order 6) | plain LSTM loop "
          "| gentext - Markov | weight on the network |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        weight = r["mix"].get("weight", math.nan)
        print(
            f"| {r['name']} | {r['chars']:,} | {r['budget']} | {r['gentext']:.3f} | {r['net']:.3f} | {r['markov']:.3f} "
            f"| {r['plain']:.3f} | {r['gentext'] - r['markov']:+.3f} | {weight:.2f} |"
        )
    beaten = [r["name"] for r in rows if r["markov"] - r["gentext"] >= 0.05]
    print(f"beats the Markov chain by >= 0.05 nats/char: {len(beaten)} of {len(rows)} ({', '.join(beaten) or 'none'})")


if __name__ == "__main__":
    main()
