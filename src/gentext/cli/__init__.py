"""`gentext` command line: a table of subcommands, each a thin call into `gentext.api`, registered by
its command module (train, generate, evaluate, doctor, serve, runs: info, export, attention, corpora).

With those modules, the only code that reads argv or prints. Errors are one
`error: ...` line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys

from gentext.cli import doctor as cli_doctor
from gentext.cli import evaluate as cli_evaluate
from gentext.cli import generate as cli_generate
from gentext.cli import runs as cli_runs
from gentext.cli import serve as cli_serve
from gentext.cli import train as cli_train
from gentext.cli.options import add_options
from gentext.cli.output import version_text
from gentext.errors import GentextError, TrainingInterrupted
from gentext.threads import configure as configure_threads
from gentext.useconfig import RuntimeConfig


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

    for module in (cli_train, cli_generate, cli_evaluate, cli_doctor, cli_serve, cli_runs):
        module.register(sub)  # each command module adds its own commands and flags
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
