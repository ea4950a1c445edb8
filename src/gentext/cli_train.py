"""`gentext train`: its flags, the documented presets, and the call into `gentext.api.train`."""

from __future__ import annotations

import argparse
import math
import re
import sys

from . import api, distributed
from .cli_output import print_json
from .config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r} (use e.g. 300, 90s, 10m, 1h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def _cutoffs(text: str) -> list[int]:
    """'2000,6000' -> [2000, 6000]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid cutoffs {text!r} (use e.g. 2000,6000)") from None


# Documented recipes: flag values a preset supplies unless the flag is given explicitly.
PRESETS: dict[str, dict[str, object]] = {
    # Tiny Shakespeare on a 2-core CPU: a 2x512 LSTM with small batches for many updates per minute,
    # the cosine schedule fitted to 10 minutes (benchmarks/RESULTS.md has what it reaches).
    "shakespeare-cpu": dict(
        hidden_size=512,
        num_layers=2,
        embed_size=64,
        batch_size=16,
        seq_len=64,
        lr=4e-3,
        time_limit=600.0,
        eval_every=400,
    ),
    # Penn Treebank (pre-tokenized words) on a 2-core CPU in 15 minutes: a tied 2x256 LSTM with an
    # adaptive softmax (2.4x the tokens/s of a full one) and plain SGD at lr 20, clip 0.25, batch 20.
    # Six epochs leave it under-trained, so it is lightly regularised (dropout 0.1), and no stream
    # starts cold: PTB is scored as one carried stream, never from a zero state. Few periodic
    # evaluations: each costs seconds of the 15 minutes.
    "ptb-cpu": dict(
        level="word",
        tokenize="whitespace",
        hidden_size=256,
        embed_size=256,
        num_layers=2,
        tie_weights=True,
        dropout=0.1,
        adaptive_softmax=[2000, 6000],
        batch_size=20,
        seq_len=35,
        optimizer="sgd",
        lr=20.0,
        grad_clip=0.25,
        time_limit=900.0,
        eval_every=4000,
        save_every=4000,
        state_reset=0.0,
    ),
}


def apply_preset(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> None:
    """Preset values for the flags not on the command line (a flag given with its default value,
    such as `--batch-size 16`, still wins: presence is what counts, not the value)."""
    options = {action.dest: action.option_strings for action in parser._actions}
    names = [arg.split("=", 1)[0] for arg in argv if arg.startswith("--") and len(arg) > 2]
    for key, value in PRESETS[args.preset].items():
        given = any(opt.startswith(name) for name in names for opt in options[key])  # argparse takes prefixes
        if not given:
            setattr(args, key, value)


def cmd_train(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    if args.preset:
        apply_preset(args, args.train_parser, args.argv)

    corpus = CorpusConfig(
        paths=args.paths,
        glob=args.glob,
        val_fraction=args.val_fraction,
        val_path=args.val,
        encoding_errors=args.encoding_errors,
        mode=args.mode,
        offline=args.offline,
    )
    if args.corpus:
        corpus.builtin = args.corpus
    tokenizer = TokenizerConfig(
        level=args.level, tokenize=args.tokenize, vocab_size=args.vocab_size, min_count=args.min_count
    )
    model = ModelConfig(
        kind=args.model,
        embed_size=args.embed_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        dropout=args.dropout,
        tie_weights=args.tie_weights,
        order=args.order,
        adaptive_cutoffs=args.adaptive_softmax,
    )
    train = TrainConfig(
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        learning_rate=args.lr,
        optimizer=args.optimizer,
        min_lr_ratio=args.min_lr_ratio,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip,
        steps=args.steps,
        epochs=args.epochs,
        time_limit=args.time_limit,
        eval_every=args.eval_every,
        save_every=args.save_every,
        state_reset=args.state_reset,
        patience=args.patience,
        tensorboard=args.tensorboard,
        seed=args.seed,
        device=args.device,
        precision=args.precision,
    )

    def on_eval(step: int, val_loss: float | None, textmodel: api.TextModel) -> None:
        if args.quiet or val_loss is None:
            return
        line = f"step {step}: val loss {val_loss:.4f} nats/token ({val_loss / math.log(2):.3f} bits)"
        if args.sample_chars > 0:
            sample = textmodel.generate("", max_new_tokens=args.sample_chars, temperature=0.8, seed=0)[0]
            line += "\n  | " + sample.strip().replace("\n", "\n  | ")
        tqdm.write(line, file=sys.stderr)

    if args.resume:
        # Only the stopping and logging settings may change; the rest comes from the run's config.json.
        given = {
            "steps": args.steps,
            "epochs": args.epochs,
            "time_limit": args.time_limit,
            "patience": args.patience,
            "tensorboard": args.tensorboard or None,
        }
        summary = api.train(
            args.out,
            paths=args.paths or None,
            resume=True,
            progress=not args.quiet,
            on_eval=on_eval,
            **{k: v for k, v in given.items() if v is not None},
        )
    else:
        summary = api.train(
            args.out,
            corpus=corpus,
            tokenizer=tokenizer,
            model=model,
            train=train,
            force=args.force,
            progress=not args.quiet,
            on_eval=on_eval,
        )
    if not distributed.from_env().is_main:
        return 0  # under torchrun, rank 0 reports for everyone
    if args.json:
        print_json(summary)
    else:
        val = (
            "n/a"
            if summary["val_loss"] is None
            else f"{summary['val_loss']:.4f} nats/token, {summary['val_bpc']:.3f} bpc"
        )
        if summary["fitted_by_counting"]:
            print(
                f"fitted by counting {summary['tokens']:,} tokens in {summary['seconds']:.1f}s; "
                f"val {val}; run saved to {summary['out']}"
            )
            return 0
        print(
            f"trained {summary['steps']} steps ({summary['tokens']:,} tokens) in {summary['seconds']:.0f}s "
            f"at {summary['tokens_per_second']:,.0f} tokens/s; best val {val}; run saved to {summary['out']}"
        )
    return 0


def register(sub) -> None:
    d_train, d_model = TrainConfig(), ModelConfig()
    p = sub.add_parser("train", help="train a model on text and write a run directory")
    p.add_argument("paths", nargs="*", help="text files, directories (recursive) or - for stdin; none: built-in corpus")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--preset", choices=sorted(PRESETS), help="a documented recipe (explicit flags still win)")
    p.add_argument("--force", action="store_true", help="overwrite an existing run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--corpus", help="built-in or named corpus to use when no PATH is given (see `gentext corpora`)")
    p.add_argument("--offline", action="store_true", help="never download a named corpus (use the cache only)")
    p.add_argument("--glob", default="*.txt", help="files to take from directories (default *.txt)")
    p.add_argument("--val", help="a separate validation file (default: the last --val-fraction of the text)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--encoding-errors", default="strict", choices=["strict", "replace"])
    p.add_argument("--mode", default="stream", help="stream: one long text; lines: each line a document that ends")
    p.add_argument("--level", default="char", help="tokens: char (Unicode code points), word, or bpe (byte-level)")
    p.add_argument("--tokenize", default="regex", help="word level: regex (words + punctuation) or whitespace")
    p.add_argument("--vocab-size", type=int, help="word: keep this many most frequent words; bpe: vocabulary size")
    p.add_argument("--min-count", type=int, default=1, help="word level: rarer words become <unk>")
    p.add_argument("--model", default=d_model.kind, help="lstm | gru | rnn | markov (Kneser-Ney n-gram baseline)")
    p.add_argument("--num-layers", type=int, default=d_model.num_layers)
    p.add_argument("--hidden-size", type=int, default=d_model.hidden_size)
    p.add_argument("--embed-size", type=int, default=d_model.embed_size)
    p.add_argument("--dropout", type=float, default=d_model.dropout)
    p.add_argument("--tie-weights", action="store_true", help="share embedding and output weights")
    p.add_argument(
        "--adaptive-softmax",
        type=_cutoffs,
        default=[],
        metavar="CUTOFFS",
        help="word ids where softmax clusters start, e.g. 2000,6000: a fast output layer for big vocabularies",
    )
    p.add_argument("--order", type=int, default=d_model.order, help="markov: n-gram order (context + 1)")
    p.add_argument("--batch-size", type=int, default=d_train.batch_size, help="parallel streams")
    p.add_argument("--seq-len", type=int, default=d_train.seq_len, help="BPTT window in tokens")
    p.add_argument("--lr", type=float, default=d_train.learning_rate, help="peak learning rate")
    p.add_argument("--optimizer", default=d_train.optimizer, help="adamw, or sgd (then use a high --lr such as 20)")
    p.add_argument(
        "--min-lr-ratio",
        type=float,
        default=d_train.min_lr_ratio,
        help="the cosine schedule ends at this fraction of --lr",
    )
    p.add_argument("--warmup-steps", type=int, default=d_train.warmup_steps)
    p.add_argument("--weight-decay", type=float, default=d_train.weight_decay)
    p.add_argument("--grad-clip", type=float, default=d_train.grad_clip)
    p.add_argument("--steps", type=int, help="stop after this many steps (default 2000 if no limit is given)")
    p.add_argument("--epochs", type=float, help="stop after this many passes over the data")
    p.add_argument("--time-limit", type=parse_duration, help="stop after this long, e.g. 10m; the LR schedule fits it")
    p.add_argument("--eval-every", type=int, default=d_train.eval_every, help="steps between validations")
    p.add_argument("--save-every", type=int, default=d_train.save_every, help="steps between resumable checkpoints")
    p.add_argument(
        "--state-reset",
        type=float,
        default=d_train.state_reset,
        help="chance a stream starts a window from a zero state, so the model learns to start cold",
    )
    p.add_argument("--patience", type=int, help="stop after this many evaluations without improvement")
    p.add_argument("--tensorboard", action="store_true", help="also log to RUN/tensorboard (needs tensorboard)")
    p.add_argument("--sample-chars", type=int, default=120, help="sample this many tokens at each evaluation (0: none)")
    p.add_argument("--seed", type=int, default=d_train.seed)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16")
    p.add_argument("--quiet", action="store_true", help="no progress bar or samples")
    p.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    p.set_defaults(func=cmd_train, train_parser=p)
