"""The commands about one run directory and about the corpora: `gentext info`, `export`,
`attention` and `corpora`."""

from __future__ import annotations

import argparse

from gentext.cli.output import print_json
from gentext.data.corpus import BUILTIN_CORPORA
from gentext.data.download import NAMED_CORPORA
from gentext.errors import GentextError
from gentext.paths import cache_dir


def _load(run: str):
    """The run in float32. gentext.api is imported here, not at the top, so that reading the command
    line (and `--help`, and a mistyped flag) does not load torch."""
    from gentext import api

    return api.load(run, weights="fp32")


def cmd_info(args: argparse.Namespace) -> int:
    info = _load(args.run).info()
    if args.json:
        print_json(info)
        return 0
    m = info["model"]
    print(f"run:        {info['run']}")
    if m["kind"] == "markov":
        print(f"model:      markov order {m['order']} (interpolated Kneser-Ney), {info['parameters']:,} n-grams")
    else:
        print(
            f"model:      {m['kind']} {m['num_layers']}x{m['hidden_size']} (embed {m['embed_size']}, "
            f"dropout {m['dropout']}, tied {m['tie_weights']}), {info['parameters']:,} parameters"
        )
    print(f"tokenizer:  {info['tokenizer']['level']}, {info['tokenizer']['vocab_size']} tokens")
    print(f"corpus:     {', '.join(info['corpus'] or [])}")
    if info["best_val_loss"] is not None:
        print(f"best val:   {info['best_val_loss']:.4f} nats/token over {info['evaluations']} evaluations")
    if info["result"]:
        r = info["result"]
        print(
            f"trained:    {r['steps']} steps, {r['tokens']:,} tokens, {r['seconds']:.0f}s, "
            f"{r['tokens_per_second']:,.0f} tokens/s"
        )
    if m["kind"] != "markov":
        print(f"samples:    {_sampled_from(info)}")
    return 0


def _sampled_from(info: dict) -> str:
    """What `generate` draws from (the network, its cache, its chain) and the figure for it."""
    parts, cache, mixture = ["the network"], info["cache"], info["mixture"]
    if cache:
        sure = f", heard where one token holds {cache['gate']:g} of it" if cache["gate"] else ""
        parts.append(f"a neural cache of its last {cache['window']} outputs ({cache['similarity']}{sure})")
    if mixture:
        per_label = " per label" if mixture.get("labels") else ""
        parts.append(f"a Kneser-Ney chain of order {mixture['order']}{per_label}")
    sampled = (info["result"] or {}).get("sampled_val_loss")
    figure = f"; {sampled:.4f} nats/token as sampled on held-out text" if sampled is not None else ""
    return " + ".join(parts) + figure + ("" if len(parts) == 1 else " (--no-mix: the network alone)")


def cmd_export(args: argparse.Namespace) -> int:
    from gentext.checkpoint import ONNX
    from gentext.inference.export import export_onnx

    if args.format != "onnx":
        raise GentextError(f"--format must be onnx, got {args.format!r}")
    model = _load(args.run)
    exported = export_onnx(model, args.output or f"{args.run}/{ONNX}", args.weights)
    print(f"wrote {exported.path}")
    check = exported.check
    if check:
        print(
            f"held-out loss in onnxruntime: fp32 {check['fp32']:.4f}, int8 {check['int8']:.4f} nats/token "
            f"({check['int8'] - check['fp32']:+.4f})"
        )
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    from gentext.inference.translation import attention_picture

    model = _load(args.run)
    if not model.pairs:
        raise GentextError(f"{args.run} is not a seq2seq run: only --model seq2seq has attention over a source")
    output, path = attention_picture(model, args.source, args.out)
    print(f"{args.source.strip()} -> {output}; attention drawn to {path}")
    return 0


def cmd_corpora(args: argparse.Namespace) -> int:
    if args.make:
        return _make_corpus(args)
    for name, (description, _) in BUILTIN_CORPORA.items():
        print(f"{name:16s} built in   {description}")
    for name, corpus in NAMED_CORPORA.items():
        cached = (cache_dir() / name / corpus.train.name).is_file()
        print(f"{name:16s} {'cached   ' if cached else 'download '} {corpus.description}")
    print(f"(downloads go to {cache_dir()}; set GENTEXT_CACHE to change it)")
    print("shapes           --make     pictures + captions for --condition image: gentext corpora --make shapes DIR")
    return 0


def _make_corpus(args: argparse.Namespace) -> int:
    from gentext.data.shapes import make_shapes

    name, out = args.make
    if name != "shapes":
        raise GentextError(f"--make knows shapes (pictures written to a folder), got {name!r}")
    if args.count < 1:
        raise GentextError(f"--count must be at least 1, got {args.count}")
    path = make_shapes(out, args.count, args.seed)
    print(f"wrote {args.count:,} pictures and their captions to {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("info", help="describe a run: model, vocabulary, parameters, metrics")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write the single-step network as ONNX (state in, logits and state out)")
    p.add_argument("run")
    p.add_argument("--format", default="onnx")
    p.add_argument("--output", help="file to write (default RUN/model.onnx)")
    p.add_argument("--weights", choices=["fp32", "int8"], default="fp32", help="int8: matrices quantized per channel")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("attention", help="a seq2seq run: draw the attention matrix of one translation (PNG)")
    p.add_argument("run")
    p.add_argument("--source", required=True, help="the text to translate")
    p.add_argument("--out", default="attention.png", help="the picture to write [attention.png]")
    p.set_defaults(func=cmd_attention)

    p = sub.add_parser("corpora", help="list the built-in and named corpora; --make shapes DIR draws pictures")
    p.add_argument("--make", nargs=2, metavar=("NAME", "DIR"), help="write a generated corpus (shapes) to DIR")
    p.add_argument("--count", type=int, default=6000, help="--make: pictures to draw [6000]")
    p.add_argument("--seed", type=int, default=0, help="--make: the drawing's seed [0]")
    p.set_defaults(func=cmd_corpora)
