"""CLI commands that measure runs: eval (with the novelty check) and compare."""

from __future__ import annotations

import argparse

from gentext.cli.options import add_options, load_run
from gentext.cli.output import print_json
from gentext.data.corpus import read_text
from gentext.errors import GentextError
from gentext.useconfig import LoadConfig

MEASURE_DEFAULTS = {"weights": "fp32"}  # a measurement reproduces training's figures unless a format is asked for


def cmd_eval(args: argparse.Namespace) -> int:
    model = load_run(args, args.run, weights="fp32")  # as score: fp32 unless --weights is typed
    result = model.evaluate(paths=args.paths or None, unknown=args.unknown, dynamic_lr=args.dynamic_eval)
    if args.samples and model.labels:
        result.update(model.sample_label_accuracy(args.samples, max_new_tokens=args.sample_tokens, seed=args.seed))
    if args.samples:
        result["novelty"] = model.novelty(
            samples=args.samples, max_new_tokens=args.sample_tokens, span=args.span, seed=args.seed
        )
    if args.json:
        print_json(result)
        return 0
    if not model.condition.text_figures:  # seq2seq and captioning runs: their own figures
        print("\n".join(model.condition.summary_lines(result)))
        return 0
    print(
        f"loss {result['loss']:.4f} nats/token | perplexity {result['perplexity']:.2f} | "
        f"{result['bpc']:.4f} bits/char | {result['tokens']:,} tokens, {result['characters']:,} characters"
    )
    if result.get("fitted_tokens_left_out"):
        print(
            f"on the held-out split after its first {result['fitted_tokens_left_out']:,} tokens, which the "
            "mixture's and cache's weights were chosen on (--no-mix: the network alone, on the whole split)"
        )
    if "dynamic" in result:
        d = result["dynamic"]
        print(
            f"dynamic evaluation (weights adapted to the text as it is read, lr {d['lr']:g}; Krause et al. 2018): "
            f"loss {d['loss']:.4f} nats/token | perplexity {d['perplexity']:.2f} | {d['bpc']:.4f} bits/char"
        )
    if result.get("skipped_characters"):
        print(_skipped_line(result))
    if "bpc_closed_vocab" in result:
        print(_spelling_line(result))
    for line in model.condition.summary_lines(result):  # a labelled run: its label accuracy
        print(line)
    if args.samples:
        n = result["novelty"]
        print(
            f"novelty: {n['copied_share']:.1%} of {n['span']}-character spans in {n['samples']} samples are copied "
            f"from the training text; longest copy {n['longest_copy']} characters: {n['longest_example']!r}"
        )
    return 0


def _spelling_line(result: dict) -> str:
    if result["unknown_words"] is None:
        return "bits/char count <unk> as one token: the held-out text was not found to price their spelling"
    return (
        f"bits/char include spelling the {result['unknown_words']:,} <unk> words with a character model "
        f"({result['bpc_closed_vocab']:.4f} with <unk> as one token, the closed-vocabulary figure)"
    )


def _skipped_line(result: dict) -> str:
    return (
        f"left out: {result['skipped_characters']:,} characters ({result['skipped_share']:.2%}) "
        "that the model cannot represent"
    )


def compare_rows(args: argparse.Namespace) -> list[dict]:
    runs, data, sample_tokens, unknown = args.runs, args.data, args.sample_tokens, args.unknown
    models = [load_run(args, run, weights="fp32") for run in runs]
    conditional = [not m.condition.text_figures for m in models]
    if any(conditional):
        if not all(conditional):
            raise GentextError("compare: seq2seq and captioning runs compare with each other, not with text models")
        return [conditional_row(run, model, data) for run, model in zip(runs, models, strict=True)]
    # One held-out text for every run, so the numbers rank: --data, else the first run's validation split.
    text = read_text([data]) if data else models[0].held_out_text()
    # With --unknown skip, what any run cannot represent is left out for all: every row scores the same text.
    union = set().union(*(m.tokenizer.unknown_chars(text) for m in models)) if unknown == "skip" else set()
    rows = []
    for run, model in zip(runs, models, strict=True):
        info = model.info()
        try:
            result = model.evaluate(text=text, unknown=unknown, leave_out=union)
        except GentextError as exc:
            raise GentextError(f"{run}: {exc}") from None
        sample = model.generate("", max_new_tokens=sample_tokens, temperature=0.8, seed=0)[0]
        rows.append(
            {
                "run": run,
                "kind": info["model"]["kind"]
                + (f"-{info['model']['order']}" if info["model"]["kind"] == "markov" else ""),
                "level": info["tokenizer"]["level"],
                "parameters": info["parameters"],
                "loss": result["loss"],
                "perplexity": result["perplexity"],
                "bpc": result["bpc"],
                "bpc_closed_vocab": result.get("bpc_closed_vocab", result["bpc"]),
                "gen_tokens_per_s": model.generation_speed(),
                "skipped_characters": result.get("skipped_characters", 0),
                "sample": " ".join(sample.split())[:60],
            }
        )
    return rows


def conditional_row(run: str, model, data: str | None) -> dict:
    """A seq2seq or captioning run's headline figures on its held-out pairs (or `data`)."""
    result = model.evaluate(paths=[data] if data else None)
    figures = model.condition.headline
    return {"run": run, "kind": model.model.config.kind, **{k: result[k] for k in figures if k in result}}


def cmd_compare(args: argparse.Namespace) -> int:
    rows = compare_rows(args)
    if args.json:
        print_json({"runs": rows})
        return 0
    if "bpc" not in rows[0]:  # seq2seq / captioning: their own columns, best first
        names = [k for k in rows[0] if k not in ("run", "kind")]
        print("| run | kind | " + " | ".join(names) + " |")
        print("|---|---|" + "---:|" * len(names))
        for r in sorted(rows, key=lambda r: -r.get(names[-1], 0.0)):  # a figure one run lacks prints as "-"
            print(f"| {r['run']} | {r['kind']} | " + " | ".join(f"{r[k]:.4g}" if k in r else "-" for k in names) + " |")
        return 0
    # Ranked by bits per character with every <unk> spelled out: the one scale all levels share.
    print("| run | kind | level | parameters | val loss/token | perplexity | bpc | gen tokens/s | sample |")
    print("|---|---|---|---:|---:|---:|---:|---:|---|")
    for r in sorted(rows, key=lambda r: r["bpc"]):
        closed = f" ({r['bpc_closed_vocab']:.4f} closed vocab)" if r["bpc_closed_vocab"] != r["bpc"] else ""
        print(
            f"| {r['run']} | {r['kind']} | {r['level']} | {r['parameters']:,} | {r['loss']:.4f} | "
            f"{r['perplexity']:.2f} | {r['bpc']:.4f}{closed} | {r['gen_tokens_per_s']:,.0f} | {r['sample']} |"
        )
    if rows and rows[0]["skipped_characters"]:
        print(
            f"every run was scored without the {rows[0]['skipped_characters']:,} characters some run cannot represent"
        )
    return 0


UNKNOWN_FLAG = dict(
    choices=["error", "skip"],
    default="error",
    help="characters a char-level model has never seen: error, or skip (leave them out of the loss and say how many)",
)


def register(sub) -> None:
    p = sub.add_parser("eval", help="loss, perplexity and bits per character on held-out text")
    p.add_argument("run")
    p.add_argument("paths", nargs="*", help="text to evaluate (default: the run's validation split)")
    p.add_argument("--samples", type=int, default=0, help="also generate K samples and check them for copying")
    p.add_argument("--sample-tokens", type=int, default=500, help="tokens per novelty sample")
    p.add_argument("--span", type=int, default=20, help="novelty window in characters")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dynamic-eval",
        type=float,
        metavar="LR",
        help="also report dynamic evaluation: the weights take an SGD step of this size after each 64 tokens they "
        "scored (Krause et al. 2018; a separate figure, never mixed into the plain one)",
    )
    add_options(p, LoadConfig, defaults=MEASURE_DEFAULTS)
    p.add_argument("--unknown", **UNKNOWN_FLAG)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("compare", help="one table of several runs on the same held-out text")
    p.add_argument("runs", nargs="+")
    p.add_argument("--data", help="held-out text (default: the first run's validation split)")
    p.add_argument("--sample-tokens", type=int, default=80)
    p.add_argument("--unknown", **UNKNOWN_FLAG)
    add_options(p, LoadConfig, defaults=MEASURE_DEFAULTS)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)
