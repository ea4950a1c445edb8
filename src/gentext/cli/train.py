"""`gentext train`: its flags (derived from the config dataclasses), the documented presets
(gentext/presets.py), and the call into `gentext.api.train`."""

from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING, Any

from gentext.cli.options import add_options, given
from gentext.cli.output import print_json
from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.presets import PRESETS

if TYPE_CHECKING:  # torch loads when a command runs, not when the command line is read
    from gentext.inference.textmodel import TextModel

CONFIGS = (CorpusConfig, TokenizerConfig, ModelConfig, TrainConfig)


def _print_eval(args: argparse.Namespace):
    """The callback printing validation loss (and a short sample) at each evaluation."""
    from tqdm.auto import tqdm

    def on_eval(step: int, val_loss: float | None, textmodel: TextModel) -> None:
        if args.quiet or val_loss is None:
            return
        line = f"step {step}: val loss {val_loss:.4f} nats/token ({val_loss / math.log(2):.3f} bits/token)"
        if args.sample_chars > 0 and not (textmodel.pairs or textmodel.captions):  # those need a source or picture
            sample = textmodel.generate(
                "", textmodel.default_label, max_new_tokens=args.sample_chars, temperature=0.8, seed=0
            )[0]
            line += "\n  | " + sample.strip().replace("\n", "\n  | ")
        tqdm.write(line, file=sys.stderr)

    return on_eval


def typed_options(args: argparse.Namespace) -> dict[str, Any]:
    """The config options given as flags (config field names)."""
    return {k: v for cls in CONFIGS for k, v in given(args, cls).items()}


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """The preset's values overridden by the flags typed (presence counts, not the value: a flag
    given with its default value still wins)."""
    return {**PRESETS.get(args.preset, {}), **typed_options(args)}


def cmd_train(args: argparse.Namespace) -> int:
    from gentext import api
    from gentext.training import distributed

    summary = api.train(
        args.out,
        paths=args.paths or None,
        resume=args.resume,
        force=args.force,
        progress=not args.quiet,
        on_eval=_print_eval(args),
        **(typed_options(args) if args.resume else train_options(args)),
    )
    if not distributed.from_env().is_main:
        return 0  # under torchrun, rank 0 reports for everyone
    if args.json:
        print_json(summary)
    else:
        print(_summary_line(summary))
    return 0


def _summary_line(summary: dict[str, Any]) -> str:
    val = "n/a"
    if summary["val_loss"] is not None:
        val = f"{summary['val_loss']:.4f} nats/token"
        if summary["val_bpc"] is not None:  # captions are not a token stream
            val += f", {summary['val_bpc']:.3f} bits/char"
            if summary.get("level") == "word":
                val += " (<unk> as one token; gentext eval adds its spelling)"
    if summary["fitted_by_counting"]:
        return (
            f"fitted by counting {summary['tokens']:,} tokens in {summary['seconds']:.1f}s; "
            f"val {val}; run saved to {summary['out']}"
        )
    done = f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['seconds']:.0f}s"
    if summary.get("resumed_at") is not None:  # this session's part, then the whole run's
        done = (
            f"resumed at step {summary['resumed_at']}: trained {summary['steps'] - summary['resumed_at']} more "
            f"steps in {summary['session_seconds']:.0f}s ({summary['steps']} steps, {summary['seconds']:.0f}s in all)"
        )
    line = (
        f"{done} at {summary['tokens_per_second']:,.0f} tokens/s; final validation {summary['eval_seconds']:.0f}s; "
        f"best val {val}; run saved to {summary['out']}"
    )
    mix = summary.get("mixture")
    if mix:  # a line of its own before the summary, which stays the last line
        cached = f" (cache weight {mix['cache_weight']:.3f})" if "cache_weight" in mix else ""
        line = (
            f"mixed with {'one Kneser-Ney chain per label' if mix.get('labels') else 'a Kneser-Ney chain'} of order "
            f"{mix['order']} (weight {mix['weight']:.2f} on the network): "
            f"{mix['val_loss']:.4f} nats/token as sampled{cached}, on {mix['tokens']:,} held-out tokens no weight or "
            f"order was chosen on (network alone {mix['net_val_loss']:.4f}, chain alone {mix['chain_val_loss']:.4f}; "
            f"--mix-markov 0 turns it off)\n"
        ) + line
    cache = summary.get("cache")
    if cache:
        line = (
            f"neural cache of the network's last {cache['window']} outputs (theta {cache['theta']:g}, weight "
            f"{cache['weight']:.3f}{_where_heard(cache)}): {cache['val_loss']:.4f} "
            f"nats/token on the {cache['tokens']:,} validation tokens it was fitted on "
            f"(network alone {cache['net_val_loss']:.4f}; --neural-cache 0 turns it off)\n"
        ) + line
    origin = summary.get("init_from")
    if origin and origin.get("original_val_loss_after") is not None:
        before = origin["original_val_loss_before"]
        line += (
            f"\nfine-tuned from {origin['run']} ({origin['tokens_added']} new tokens); on its held-out text: "
            f"{'?' if before is None else f'{before:.4f}'} -> {origin['original_val_loss_after']:.4f} nats/token"
        )
    return line


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model on text and write a run directory")
    p.add_argument("paths", nargs="*", help="text files, directories (recursive) or - for stdin; none: built-in corpus")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a documented recipe (explicit flags still win)")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    for cls in CONFIGS:
        add_options(p.add_argument_group(cls.__doc__.splitlines()[0].rstrip(".").lower()), cls, skip=("paths",))
    p.add_argument("--sample-chars", type=int, default=120, help="sample this many tokens at each evaluation (0: none)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.set_defaults(func=cmd_train)


def _where_heard(cache: dict[str, Any]) -> str:
    """A gated cache's share of the tokens it is heard on (an ungated one, words', is heard on all)."""
    return f" where it is sure: {cache['heard']:.0%} of tokens" if cache.get("gate") else ""
