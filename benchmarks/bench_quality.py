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
last 5%) with `--preset shakespeare-cpu` for 10 minutes,
and PTB's own train / valid / test files with `--preset ptb-cpu` for 15 minutes — the README's
commands for those corpora.

gentext and the chain read train and validation (the validation text picks the best weights, the
neural cache and the mixture weight); gentext's row is the model `gentext.load` gives (the network
with its cache where it has one, models/cache.py, mixed with a chain, models/mixture.py), the network with its cache
and alone beside it. Everything is scored as one stream, its state carried.

Baselines: the loop a competent user writes (plain_lm.py): a 2 x 512 character LSTM with Adam, and
pytorch/examples' word_language_model at word level.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from plain_lm import CHAR, WORD, Plain, plain_loss
from torch import nn

import gentext
from gentext.data.corpus import load_builtin
from gentext.inference.textmodel import TextModel
from gentext.models.cache import CacheModel
from gentext.presets import PRESETS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TEXTS = {"tinyshakespeare": DATA / "tinyshakespeare.txt", "wikitext-2": DATA / "wikitext-2" / "train.txt"}
TEXTS["ptb"] = DATA / "ptb" / "ptb.train.txt"


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


def scores(run: Path, chain: Path, test: str) -> dict:
    """Test nats/token of the run as `gentext.load` gives it, of its network with its cache (if it
    has one) and alone, and of the chain."""
    mixed, alone = gentext.load(run), gentext.load(chain)
    inner = [mixed.model]
    while isinstance(getattr(inner[-1], "net", None), nn.Module):  # mixture -> cache -> network
        inner.append(inner[-1].net)
    cached = next((m for m in inner if isinstance(m, CacheModel)), None)
    models = {"gentext": mixed.model, "cache": cached, "net": inner[-1], "markov": alone.model}
    found = {
        key: TextModel(m, mixed.tokenizer, mixed.config, condition=mixed.condition)
        for key, m in models.items()
        if m is not None
    }
    found = {key: model.score(test, unknown="skip")["loss"] for key, model in found.items()}
    mix = dataclasses.asdict(mixed.config.mixture) if mixed.config.mixture else {}
    return {"cache": math.nan, **found, "mix": mix, "lam": cached and cached.weight}


REUSE = False  # --reuse: score the runs already in --keep instead of training them again


def train_run(out: Path, files: dict, **settings) -> float:
    """`gentext train TRAIN --val VAL` with these settings (a preset's values are flags: the CLI's
    merge, cli/train.py); the seconds it took."""
    if REUSE and (out / "config.json").exists() and "result" in json.loads((out / "config.json").read_text()):
        return json.loads((out / "config.json").read_text())["result"]["session_seconds"]
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
    seconds = 2.0 if tiny else recipe.minutes * 60
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


def show(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.3f}"


def print_small(rows: list[dict]) -> None:
    print(cpu_line("held-out nats/char on the test tenth of each text"))
    print("| text | train chars | budget | gentext (cache + chain) | network + cache | network alone "
          "| Markov (KN, order 6) | plain LSTM loop | gentext - Markov | cache / network weights |")  # fmt: skip
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        weights = f"{r['lam'] or 0:.2f} / {r['mix'].get('weight', math.nan):.2f}"
        print(
            f"| {r['name']} | {r['chars']:,} | {r['budget']} | {r['gentext']:.3f} | {show(r['cache'])} "
            f"| {r['net']:.3f} "
            f"| {r['markov']:.3f} | {r['plain']:.3f} | {r['gentext'] - r['markov']:+.3f} | {weights} |"
        )
    beaten = [r["name"] for r in rows if r["markov"] - r["gentext"] >= 0.05]
    print(f"beats the Markov chain by >= 0.05 nats/char: {len(beaten)} of {len(rows)} ({', '.join(beaten) or 'none'})")


def print_recipes(rows: list[dict]) -> None:
    print(cpu_line("\nthe README's recipes on whole corpora; test nats/char (Tiny Shakespeare), test perplexity (PTB)"))
    print("| corpus | command | budget | trained in | gentext (cache + chain) | network + cache | network alone "
          "| Markov chain | plain LSTM loop | target | reached |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        recipe = r["recipe"]
        word = recipe.plain.level == "word"
        fmt = (lambda x: show(x) if math.isnan(x) else f"{math.exp(x):.1f}") if word else show
        figure = math.exp(r["gentext"]) if word else r["gentext"]
        chain = f"order {recipe.chain['order']}"
        print(
            f"| {recipe.name} | --preset {recipe.preset} | {budget(r['seconds'] / 60)} | {r['took']:.0f} s "
            f"| {fmt(r['gentext'])} | {fmt(r['cache'])} | {fmt(r['net'])} | {fmt(r['markov'])} ({chain}) "
            f"| {fmt(r['plain'])} "
            f"| {recipe.target:g} | {'yes' if figure <= recipe.target else 'no'} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="training minutes per network")
    parser.add_argument("--size", type=int, default=100_000, help="characters per text")
    parser.add_argument("--texts", nargs="+", default=list(TEXTS), choices=list(TEXTS))
    parser.add_argument("--full", action="store_true", help="also the recipes: Tiny Shakespeare 10 min, PTB 15 min")
    parser.add_argument("--only-recipes", action="store_true", help="the recipes' table alone")
    parser.add_argument("--recipes", nargs="+", default=[r.name for r in RECIPES], choices=[r.name for r in RECIPES])
    parser.add_argument("--keep", type=Path, help="write the runs here (kept) instead of a temporary folder")
    parser.add_argument("--reuse", action="store_true", help="score the finished runs in --keep, do not retrain them")
    parser.add_argument("--tiny", action="store_true", help="small texts, seconds of budget (smoke test)")
    args = parser.parse_args()
    global REUSE
    REUSE = args.reuse and args.keep is not None
    if args.tiny:
        args.minutes, args.size, args.texts = 3 / 60, 20_000, args.texts[:1]
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        small = (
            []
            if args.only_recipes
            else [row(n, args.size, budget(args.minutes), args.minutes * 60, root) for n in args.texts]
        )
        wanted = args.full or args.only_recipes or args.tiny
        chosen = [recipe for recipe in RECIPES if wanted and recipe.name in args.recipes]
        recipes = [r for r in (recipe_row(recipe, root, args.tiny) for recipe in chosen) if r is not None]
    if small:
        print_small(small)
    if recipes:
        print_recipes(recipes)


if __name__ == "__main__":
    main()
