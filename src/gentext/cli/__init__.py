"""`gentext` command line: a table of subcommands, each a thin call into `gentext.api`.

With its `cli_*` command modules, the only code that reads argv or prints. Errors are one
`error: ...` line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from gentext import api, checkpoint
from gentext.cli import doctor as cli_doctor
from gentext.cli import evaluate as cli_evaluate
from gentext.cli import generate as cli_generate
from gentext.cli import train as cli_train
from gentext.cli.options import add_options, given
from gentext.cli.output import print_json, version_text
from gentext.data.corpus import BUILTIN_CORPORA
from gentext.data.download import NAMED_CORPORA
from gentext.errors import GentextError
from gentext.paths import cache_dir
from gentext.server.requests import Listening, ServerLimits
from gentext.threads import configure as configure_threads
from gentext.training.trainer import TrainingInterrupted
from gentext.useconfig import LoadConfig, RuntimeConfig


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, like every other usage error
        raise GentextError(f"{message}{_did_you_mean(self, message)} (see {self.prog} --help)")


def _did_you_mean(parser: argparse.ArgumentParser, message: str) -> str:
    """For a mistyped flag, the closest flags of the command it was given to (argparse reports
    unknown arguments from the top-level parser, so the command is looked up from argv)."""
    if not message.startswith("unrecognized arguments:"):
        return ""
    argv = getattr(parser, "argv", [])
    commands = next((a._name_parser_map for a in parser._actions if isinstance(a, argparse._SubParsersAction)), {})
    command = next((commands[word] for word in argv if word in commands), parser)
    flags = [flag for action in command._actions for flag in action.option_strings]
    hints = []
    for word in message.split(":", 1)[1].split():
        if word.startswith("--"):
            close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
            hints += [f"{word} -> {close[0]}"] if close else []
    return f"; did you mean {', '.join(hints)}?" if hints else ""


def cmd_info(args: argparse.Namespace) -> int:
    info = api.load(args.run, weights="fp32").info()
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


def cmd_serve(args: argparse.Namespace) -> int:
    from gentext.server.running import serve

    limits = ServerLimits(**given(args, ServerLimits)).validate()
    listening = Listening(**given(args, Listening)).validate()
    api_key = listening.api_key or os.environ.get("GENTEXT_API_KEY") or None
    serve(
        args.runs,
        listening.host,
        listening.port,
        limits,
        api_key=api_key,
        cors_origins=listening.cors_origins,
        batching=not args.no_batching,
        load=given(args, LoadConfig),
        threads=getattr(args, "threads", None),
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from gentext.inference.export import export_onnx

    if args.format != "onnx":
        raise GentextError(f"--format must be onnx, got {args.format!r}")
    model = api.load(args.run, weights="fp32")
    exported = export_onnx(model, args.output or f"{args.run}/{checkpoint.ONNX}", args.weights)
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

    model = api.load(args.run, weights="fp32")
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


EXAMPLE = """example (the built-in corpus, 3 minutes, then 3 samples):
  gentext train --out runs/demo --time-limit 3m
  gentext generate runs/demo --prompt "The " --num-samples 3

gentext COMMAND --help lists a command's flags; gentext doctor describes this machine."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gentext",
        description="Train generative text models (LSTM, GRU, RNN, Transformer, Markov) on any text; sample from them.",
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"gentext {version_text()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    cli_train.register(sub)

    cli_generate.register(sub)

    cli_evaluate.register(sub)

    cli_doctor.register(sub)

    p = sub.add_parser("info", help="describe a run: model, vocabulary, parameters, metrics")
    p.add_argument("run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("serve", help="HTTP API (JSON and streaming) and a web playground for trained runs")
    p.add_argument("runs", nargs="+", help="run directories, loaded once at start")
    p.add_argument(
        "--no-batching",
        action="store_true",
        help="each generation alone, in turn (a batch of one row: --max-batch-rows 1) instead of one batched step",
    )
    add_options(p, Listening)
    add_options(p, LoadConfig)
    add_options(p, ServerLimits)  # gentext.server.requests imports no web framework until used
    p.set_defaults(func=cmd_serve)

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
    for name, command in sub.choices.items():  # every command that runs a model takes --threads
        if name != "corpora":
            add_options(command, RuntimeConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    logging.getLogger("gentext.training.defaults").setLevel(logging.INFO)  # say which defaults were chosen
    try:
        argv = sys.argv[1:] if argv is None else argv
        parser = build_parser()
        parser.argv = argv
        args = parser.parse_args(argv)
        if args.command is None:  # bare `gentext`: what it can do and one example, not an error
            parser.print_help()
            return 0
        args.argv = argv
        configure_threads(getattr(args, "threads", None))
        return args.func(args)
    except TrainingInterrupted as exc:
        print(f"interrupted: {exc}", file=sys.stderr)
        return exc.exit_code
    except GentextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:  # a bug, not bad input: one line unless asked for the traceback
        if os.environ.get("GENTEXT_DEBUG"):
            raise
        print(
            f"error: internal error: {type(exc).__name__}: {exc} (set GENTEXT_DEBUG=1 for a traceback)", file=sys.stderr
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
