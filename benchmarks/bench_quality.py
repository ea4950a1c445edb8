"""Quality per minute (issue 30): gentext against its own Kneser-Ney chain and a plain PyTorch LSTM
loop given the same minutes, every figure on held-out text no run read.

    python benchmarks/bench_quality.py                 # three 100 KB texts, 3 minutes per network
    python benchmarks/bench_quality.py --minutes 1     # quicker, same table
    python benchmarks/bench_quality.py --full          # also Tiny Shakespeare 10 min and PTB words 15 min (~60 min)
    python benchmarks/bench_quality.py --tiny          # seconds: small texts, seconds of budget (the test suite)

**A user's small text.** Each text is 100 KB cut from a corpus in ../shared/data (Tiny
Shakespeare, WikiText-2, PTB; the built-in corpus where they are absent), split by lines into train
(80%), validation (10%) and test (10%); gentext is the default command with a time limit.
**The recipes** (`--full`): Tiny Shakespeare (train the first 90%, validation the next 5%, test the
last 5%) with `--preset shakespeare-cpu` for 10 minutes, and PTB's own train / valid / test files
with `--preset ptb-cpu` for 15 minutes — the README's commands for those corpora.

gentext and the chain read train and validation (the validation text picks the best weights and
the mixture weight); gentext's row is the model `gentext.load` gives (its network mixed with a
chain: models/mixture.py), its network alone beside it. Everything is scored as one stream, its
state carried.

Baselines: the loop a competent user writes. Characters: a 2-layer LSTM 512 wide, Adam 2e-3,
batches of 32 x 128, the state carried. Words: pytorch/examples' word_language_model (2 x 200 tied,
dropout 0.2, SGD lr 20 divided by 4 when an epoch does not improve validation, clip 0.25, 20 x 35).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

import gentext
from gentext.cli.train import PRESETS
from gentext.data.corpus import load_builtin
from gentext.inference.textmodel import TextModel

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTS = {"tinyshakespeare": DATA / "tinyshakespeare.txt", "wikitext-2": DATA / "wikitext-2" / "train.txt"}
TEXTS["ptb"] = DATA / "ptb" / "ptb.train.txt"


@dataclass(frozen=True)
class Plain:
    """The plain loop's recipe."""

    level: str = "char"
    width: int = 512
    tied: bool = False
    dropout: float = 0.0
    sgd: bool = False  # SGD with annealing at epoch ends (word level), else Adam
    lr: float = 2e-3
    batch: int = 32
    window: int = 128


CHAR, WORD = Plain(), Plain("word", 200, True, 0.2, True, 20.0, 20, 35)


@dataclass(frozen=True)
class Recipe:
    """One row of the recipes table: a corpus, the preset the README gives it, the budget, the target."""

    name: str
    preset: str
    minutes: float
    target: float
    plain: Plain
    chain: dict  # the standalone chain's settings


RECIPES = (
    Recipe("tinyshakespeare", "shakespeare-cpu", 10, 1.40, CHAR, {"order": 7}),
    Recipe("ptb", "ptb-cpu", 15, 85.0, WORD, {"level": "word", "tokenize": "whitespace", "order": 4}),
)


def lines_cut(text: str, *fractions: float) -> list[str]:
    """`text` cut at the first line end after each fraction of its length."""
    cuts = [0, *(text.index("\n", int(len(text) * f)) + 1 for f in fractions), len(text)]
    return [text[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def cut(name: str, size: int) -> tuple[str, str, str]:
    """train, validation and test text: `size` characters from the middle of a corpus, cut at lines."""
    path = TEXTS[name]
    text = path.read_text(encoding="utf-8") if path.exists() else load_builtin("python-docs")
    start = text.index("\n", len(text) // 3) + 1
    text = text[start : start + size]
    return tuple(lines_cut(text[: text.rindex("\n") + 1], 0.8, 0.9))


def recipe_texts(recipe: Recipe, sizes: tuple[int, ...] | None) -> tuple[str, str, str] | None:
    """train, validation and test text of a recipe row (the first `sizes` characters of each where
    given: the smoke test), or None where the corpus is absent."""
    if recipe.name == "ptb":
        paths = [DATA / "ptb" / f"ptb.{part}.txt" for part in ("train", "valid", "test")]
        if not all(p.exists() for p in paths):
            return None
        parts = [p.read_text(encoding="utf-8") for p in paths]
    else:
        if not TEXTS[recipe.name].exists():
            return None
        parts = lines_cut(TEXTS[recipe.name].read_text(encoding="utf-8"), 0.9, 0.95)
    return tuple(p[: p.rindex("\n", 0, size) + 1] for p, size in zip(parts, sizes, strict=True)) if sizes else parts


def tokens(text: str, level: str) -> list[str]:
    """Characters, or words with each line end a token (as gentext's whitespace tokenizer and
    word_language_model's <eos>)."""
    return list(text) if level == "char" else [w for line in text.split("\n") for w in (*line.split(), "\n")][:-1]


class PlainLSTM(nn.Module):
    def __init__(self, vocab: int, plain: Plain):
        super().__init__()
        self.embedding, self.drop = nn.Embedding(vocab, plain.width), nn.Dropout(plain.dropout)
        self.rnn = nn.LSTM(plain.width, plain.width, 2, dropout=plain.dropout)
        self.head = nn.Linear(plain.width, vocab)
        if plain.tied:
            self.head.weight = self.embedding.weight

    def forward(self, x, state=None):
        y, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.head(self.drop(y)), state


def stream_loss(model: PlainLSTM, ids: torch.Tensor, vocab: int) -> float:
    """Mean nats per predicted token of one stream, its state carried over windows of 1,000."""
    model.eval()
    nats, state = 0.0, None
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, 1000):
            x, y = ids[start : start + 1000], ids[start + 1 : start + 1001]
            logits, state = model(x[: len(y), None], state)
            nats += nn.functional.cross_entropy(logits.view(-1, vocab), y, reduction="sum").item()
    model.train()
    return nats / (len(ids) - 1)


def plain_loss(train: str, val: str, test: str, seconds: float, plain: Plain) -> float:
    """Train the plain loop for `seconds`, then its nats/token on the test text (unknown tokens skipped)."""
    vocab = sorted(set(tokens(train, plain.level)))
    index = {c: i for i, c in enumerate(vocab)}
    encode = lambda text: torch.tensor([index[c] for c in tokens(text, plain.level) if c in index])  # noqa: E731
    data, held = encode(train), encode(val)
    torch.manual_seed(0)
    model, lr, best = PlainLSTM(len(vocab), plain), plain.lr, math.inf
    opt = torch.optim.SGD(model.parameters(), lr=lr) if plain.sgd else torch.optim.Adam(model.parameters(), lr=lr)
    rows = data[: len(data) // plain.batch * plain.batch].view(plain.batch, -1).t()  # (T, B)
    state, pos, deadline = None, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pos + plain.window + 1 > rows.shape[0]:
            state, pos = None, 0
            if plain.sgd:  # an epoch ends: anneal when validation did not improve (word_language_model)
                loss = stream_loss(model, held, len(vocab))
                lr = lr / 4 if loss >= best else lr
                opt.param_groups[0]["lr"], best = lr, min(best, loss)
        x, y = rows[pos : pos + plain.window], rows[pos + 1 : pos + plain.window + 1]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.view(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        pos += plain.window
    return stream_loss(model, encode(test), len(vocab))


def scores(run: Path, chain: Path, test: str) -> dict:
    """Test nats/token of the run as `gentext.load` gives it, of its network alone, of the chain."""
    mixed, alone = gentext.load(run), gentext.load(chain)
    net = TextModel(getattr(mixed.model, "net", mixed.model), mixed.tokenizer, mixed.config)
    models = {"gentext": mixed, "net": net, "markov": alone}
    found = {key: model.score(test, unknown="skip")["loss"] for key, model in models.items()}
    return {**found, "mix": mixed.config.get("mixture") or {}}


def train_run(out: Path, files: dict, **settings) -> float:
    """`gentext train TRAIN --val VAL` with these settings (a preset's values are flags: the CLI's
    merge, cli/train.py); the seconds it took."""
    start = time.perf_counter()
    gentext.train(out, paths=[str(files["train"])], val_path=str(files["val"]), force=True, **settings)
    return time.perf_counter() - start


def write(root: Path, name: str, texts: tuple[str, str, str]) -> dict:
    files = {part: root / f"{name}.{part}.txt" for part in ("train", "val")}
    for part, text in zip(("train", "val"), texts, strict=False):
        files[part].write_text(text, encoding="utf-8")
    return files


def row(name: str, size: int, budget: str, seconds: float, root: Path) -> dict:
    """A user's small text: the default command with a time limit."""
    train, val, test = cut(name, size)
    files = write(root, name, (train, val))
    train_run(root / f"{name}-markov", files, model="markov")
    took = train_run(root / f"{name}-lstm", files, time_limit=seconds)
    found = scores(root / f"{name}-lstm", root / f"{name}-markov", test)
    found["plain"] = plain_loss(train, val, test, seconds, CHAR)
    return {"name": name, "budget": budget, "took": took, "chars": len(train), **found}


def recipe_row(recipe: Recipe, root: Path, tiny: bool) -> dict | None:
    """A corpus with the README's preset for it: Tiny Shakespeare 10 minutes, PTB 15 (seconds when tiny)."""
    texts = recipe_texts(recipe, (60_000, 4_000, 4_000) if tiny else None)
    if texts is None:
        return None
    seconds = 4.0 if tiny else recipe.minutes * 60
    files = write(root, recipe.name, texts[:2])
    preset = PRESETS[recipe.preset] | ({"time_limit": seconds} if tiny else {})
    if tiny and "adaptive_cutoffs" in preset:  # the smoke test's vocabulary is smaller than the clusters
        preset["adaptive_cutoffs"] = [500, 1000]
    train_run(root / f"{recipe.name}-markov", files, model="markov", **recipe.chain)
    took = train_run(root / f"{recipe.name}-preset", files, **preset)
    found = scores(root / f"{recipe.name}-preset", root / f"{recipe.name}-markov", texts[2])
    found["plain"] = plain_loss(*texts, seconds, recipe.plain)
    return {"recipe": recipe, "took": took, "seconds": seconds, **found}


def budget(minutes: float) -> str:
    return f"{minutes:g} min" if minutes >= 1 else f"{minutes * 60:.0f} s"


def cpu_line(what: str) -> str:
    cpu = "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "AVX2 only"
    return f"{what}; {platform.machine()}, {os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}"


def print_small(rows: list[dict]) -> None:
    print(cpu_line("held-out nats/char on the test tenth of each text"))
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


def print_recipes(rows: list[dict]) -> None:
    print(cpu_line("\nthe README's recipes on whole corpora; test nats/char (Tiny Shakespeare), test perplexity (PTB)"))
    print("| corpus | command | budget | trained in | gentext (mixed) | network alone | Markov chain | plain LSTM loop "
          "| target | reached |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        recipe = r["recipe"]
        show = (lambda x: f"{math.exp(x):.1f}") if recipe.plain.level == "word" else (lambda x: f"{x:.3f}")  # noqa: E731
        figure = math.exp(r["gentext"]) if recipe.plain.level == "word" else r["gentext"]
        chain = f"order {recipe.chain['order']}"
        print(
            f"| {recipe.name} | --preset {recipe.preset} | {budget(r['seconds'] / 60)} | {r['took']:.0f} s "
            f"| {show(r['gentext'])} | {show(r['net'])} | {show(r['markov'])} ({chain}) | {show(r['plain'])} "
            f"| {recipe.target:g} | {'yes' if figure <= recipe.target else 'no'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes per network")
    parser.add_argument("--size", type=int, default=100_000, help="characters per text")
    parser.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--full", action="store_true", help="also the recipes: Tiny Shakespeare 10 min, PTB 15 min")
    parser.add_argument("--only-recipes", action="store_true", help="the recipes' table alone")
    parser.add_argument("--keep", type=Path, help="write the runs here (kept) instead of a temporary folder")
    parser.add_argument("--tiny", action="store_true", help="small texts, seconds of budget (smoke test)")
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.size, args.texts = 5 / 60, 20_000, args.texts[:1]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        small = (
            []
            if args.only_recipes
            else [row(n, args.size, budget(args.minutes), args.minutes * 60, root) for n in args.texts]
        )
        wanted = args.full or args.only_recipes or args.tiny
        recipes = [r for r in (recipe_row(x, root, args.tiny) for x in RECIPES if wanted) if r is not None]
    if small:
        print_small(small)
    if recipes:
        print_recipes(recipes)


if __name__ == "__main__":
    main()
