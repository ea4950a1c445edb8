"""The lesson's comparison, measured: a Markov chain, an LSTM, a GRU, a minGRU, a Transformer and the
default command, the same minutes each.

    python benchmarks/bench_families.py                  # 10 minutes per network, Tiny Shakespeare + PTB
    python benchmarks/bench_families.py --minutes 3 --corpora tinyshakespeare
    python benchmarks/bench_families.py --tiny           # seconds: the built-in corpus, tiny models

Per corpus (Tiny Shakespeare at character level, last 10% held out; Penn Treebank at word level
with its own validation split): the Kneser-Ney chain of the order that scores best on the held-out
text (orders are tried in turn; say so when quoting it), the LSTM recipe (`--preset
shakespeare-cpu` / `ptb-cpu`), the same recipe with a GRU, a 3 x 256 minGRU (the size that did best
at 3 minutes on Tiny Shakespeare, batch 32, RESULTS.md "minGRU"; AdamW at the corpus's level: the
PTB recipe's SGD at lr 20 is the LSTM's), the Transformer recipe (`--preset
transformer-shakespeare-cpu` / `transformer-ptb-cpu`) and the default command (`--model auto`, which
picks a kind from the text's size and the minutes), each network given the same `--minutes` of
training. One table: held-out
loss (nats/token) and bits per character, parameters, training tokens/s, generation tokens/s for
1 stream and 64 streams, the share of 20-character spans of 5 samples copied from the training
text, and a sample. Every row is computed by gentext itself; `bench_speed.py` and
`bench_generation.py` hold the plain-PyTorch baselines for the speed columns.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gentext
from gentext.data.corpus import read_text
from gentext.presets import PRESETS

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CORPORA = {
    "tinyshakespeare": dict(
        train=DATA / "tinyshakespeare.txt",
        val=None,
        markov_orders=range(3, 10),
        lstm="shakespeare-cpu",
        transformer="transformer-shakespeare-cpu",
    ),
    "ptb": dict(
        train=DATA / "ptb" / "ptb.train.txt",
        val=DATA / "ptb" / "ptb.valid.txt",
        markov_orders=range(2, 5),
        lstm="ptb-cpu",
        transformer="transformer-ptb-cpu",
    ),
}
TINY = dict(hidden_size=32, embed_size=32, num_layers=1, num_heads=2, context=32, batch_size=4, seq_len=32)


def _train(out: Path, corpus: dict, options: dict) -> dict:
    paths = [str(corpus["train"])] if corpus["train"] else None
    val = {"val_path": str(corpus["val"])} if corpus.get("val") else {}
    return gentext.train(out, paths=paths, force=True, **val, **options)


def _markov(root: Path, corpus: dict, level_options: dict) -> tuple[Path, dict]:
    """The order with the best held-out loss."""
    best = None
    for order in corpus["markov_orders"]:
        out = root / f"markov-{order}"
        summary = _train(out, corpus, {**level_options, "kind": "markov", "order": order})
        if best is None or summary["val_loss"] < best[1]["val_loss"]:
            best = (out, summary)
    return best


def _row(name: str, run: Path, summary: dict, held_out: str, training: str, tiny: bool) -> dict:
    model = gentext.load(run)
    result = model.evaluate(text=held_out)
    tokens = 20 if tiny else 200
    copied = model.novelty(samples=5, max_new_tokens=tokens, training_text=training, temperature=0.8, seed=0)
    sample = model.generate("", max_new_tokens=60, temperature=0.8, seed=1)[0]
    return {
        "family": name,
        "loss": result["loss"],
        "bpc": result["bpc"],
        "parameters": model.model.num_parameters(),
        "train_tok_s": summary["tokens_per_second"],
        "gen_1": model.generation_speed(max_new_tokens=tokens),
        "gen_64": model.generation_speed(max_new_tokens=tokens, num_samples=64),
        "copied": copied["copied_share"],
        "sample": " ".join(sample.split())[:50],
    }


def run_corpus(name: str, corpus: dict, minutes: float, tiny: bool, root: Path) -> list[dict]:
    lstm, transformer = PRESETS[corpus["lstm"]], PRESETS[corpus["transformer"]]
    level = {k: v for k, v in lstm.items() if k in ("level", "tokenize")}
    budget = {"time_limit": minutes * 60}
    families = {
        "lstm": lstm,
        "gru": {**lstm, "kind": "gru"},
        "mingru": {**level, "kind": "mingru", "hidden_size": 256, "num_layers": 3, "batch_size": 32},
        "transformer": transformer,
        "default": dict(level),
    }
    if tiny:
        small = {**TINY, "adaptive_cutoffs": [], "tie_weights": False, "time_limit": None, "steps": 20}
        families = {family: {**options, **small} for family, options in families.items()}
        budget = {}
    markov_run, markov_summary = _markov(root, corpus, level)
    runs = [(f"markov-{markov_run.name.split('-')[1]}", markov_run, markov_summary)]
    for family, options in families.items():
        out = root / family
        runs.append((family, out, _train(out, corpus, {**options, **budget})))
    held_out = read_text([str(corpus["val"])]) if corpus.get("val") else gentext.load(markov_run).held_out_text()
    training = gentext.load(markov_run)._corpus().train
    rows = []
    for family, run, summary in runs:
        if family == "default":  # the kind it chose
            family = f"default ({gentext.load(run).info()['model']['kind']})"
        rows.append({"corpus": name, **_row(family, run, summary, held_out, training, tiny)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training minutes per network")
    parser.add_argument("--corpora", default="tinyshakespeare,ptb")
    parser.add_argument("--tiny", action="store_true", help="the built-in corpus, tiny models, 20 steps")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora.split(","):
            corpus = dict(CORPORA[name])
            if args.tiny:
                corpus.update(train=None, val=None, markov_orders=range(2, 4))
            elif not corpus["train"].is_file():
                print(f"({name}: {corpus['train']} is not here; skipped)")
                continue
            rows += run_corpus(name, corpus, args.minutes, args.tiny, Path(tmp) / name)
    print(f"\n{args.minutes:g} minutes of training per network")
    print("| corpus | family | held-out loss | bpc | parameters | train tok/s | gen tok/s, 1 | gen tok/s, 64 "
          "| copied 20-char spans | sample |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['corpus']} | {r['family']} | {r['loss']:.4f} | {r['bpc']:.3f} | {r['parameters']:,} | "
            f"{r['train_tok_s']:,.0f} | {r['gen_1']:,.0f} | {r['gen_64']:,.0f} | {r['copied']:.1%} | {r['sample']} |"
        )


if __name__ == "__main__":
    main()
