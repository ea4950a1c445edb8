"""CLI commands that read a trained run: generate (and its temperature sweep), chat, score."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gentext.cli.evaluate import UNKNOWN_FLAG
from gentext.cli.options import add_options, convert, given, load_run
from gentext.cli.output import print_json
from gentext.errors import GentextError
from gentext.inference.results import readable
from gentext.useconfig import LoadConfig, SampleConfig

if TYPE_CHECKING:  # torch loads with the model, not with the command line
    from gentext.inference.textmodel import TextModel


def parse_temperatures(text: str) -> list[float]:
    """'0.8' or a comma list '0.3,0.8,1.2' (one sample per temperature)."""
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid temperature {text!r} (a number or a comma list)") from None
    if not values:
        raise argparse.ArgumentTypeError("empty --temperature")
    return values


def add_sampling_arguments(p: argparse.ArgumentParser, samples: bool = True) -> None:
    """The sampling flags, from SampleConfig's fields; --temperature also takes a comma list."""
    add_options(p, SampleConfig, skip=("temperature",) if samples else ("temperature", "num_samples"))
    p.add_argument(
        "--temperature",
        type=parse_temperatures,
        default=[SampleConfig.temperature],
        help="0 is greedy; <1 sharper, >1 flatter; a comma list (0.3,0.8,1.2) prints one sample per value [0.8]",
    )
    add_options(p, LoadConfig)
    p.add_argument("--label", help="generate from this label (a run trained with --condition label)")
    p.add_argument("--source", help="translate this source text (a seq2seq run, --condition source)")


def sample_settings(args: argparse.Namespace, temperature: float) -> dict[str, Any]:
    conditions = {k: getattr(args, k) for k in ("label", "source") if getattr(args, k, None) is not None}
    return {**given(args, SampleConfig), "temperature": temperature, **conditions}


def cmd_generate(args: argparse.Namespace) -> int:
    model = load_run(args, args.run)
    if args.interactive:
        return chat_loop(model, args)
    if args.source_file:
        return _each_source(model, args)
    temperatures = args.temperature
    if args.stream:
        if getattr(args, "num_samples", 1) != 1 or args.json or len(temperatures) > 1:
            raise GentextError("--stream prints one sample as it is made; drop --num-samples / --json / the list")
        for piece in model.stream(args.prompt, **sample_settings(args, temperatures[0])):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return 0
    done, labels = [], []
    for temperature in temperatures:
        batch = model.complete(args.prompt, **sample_settings(args, temperature))
        done += batch
        labels += [temperature] * len(batch)
    _warn_incomplete(args, done)
    if args.json:
        out = {"samples": [c.text for c in done], "temperatures": labels}
        out["finish_reasons"] = [c.finish_reason for c in done]
        if getattr(args, "logprobs", None) is not None:
            out["logprobs"] = [readable(c.logprobs or [], model.tokenizer) for c in done]
        print_json(out)
        return 0
    for i, (completion, temperature) in enumerate(zip(done, labels, strict=True)):
        if len(temperatures) > 1:
            print(f"--- temperature {temperature:g} ---")
        elif len(done) > 1:
            print(f"--- sample {i + 1} ---")
        print(completion.text)
        if completion.logprobs:  # --logprobs without --json: the sample's mean, the rest is in --json
            mean = sum(r["logprob"] for r in completion.logprobs) / len(completion.logprobs)
            print(f"(log-probability {mean:.3f} a token over {len(completion.logprobs)} tokens; --json lists each)")
    return 0


def _warn_incomplete(args: argparse.Namespace, done: list) -> None:
    """A constrained sample that ran out of tokens does not match the pattern: say so."""
    if getattr(args, "regex", None) is None and getattr(args, "json_schema", None) is None:
        return
    short = [i + 1 for i, c in enumerate(done) if c.finish_reason != "stop"]
    if short:
        logging.getLogger("gentext").warning(
            "sample %s reached --max-new-tokens before completing the pattern: raise --max-new-tokens",
            ", ".join(map(str, short)),
        )


def _each_source(model, args: argparse.Namespace) -> int:
    """--source-file: one output line per source line (blank lines give blank lines)."""
    from gentext.data.corpus import read_text

    settings = sample_settings(args, args.temperature[0])
    for line in read_text([args.source_file]).splitlines():
        text = model.generate(args.prompt, **{**settings, "source": line})[0] if line.strip() else ""
        print(text.strip("\n"), flush=True)
    return 0


CHAT_SETTINGS = [f.name for f in dataclasses.fields(SampleConfig) if f.name not in ("num_samples", "num_beams")]
CHAT_HELP = (
    "commands: /NAME VALUE (or /NAME=VALUE) sets a sampling option ("
    + ", ".join(CHAT_SETTINGS)
    + "), /settings, /help; an empty line repeats the last prompt; Ctrl-D exits"
)


def _chat_command(line: str, settings: dict[str, Any]) -> bool:
    """Apply one /command to `settings`; False when it asks to quit."""
    name, _, value = line[1:].strip().partition(" ")
    if "=" in name and not value:  # /temperature=0.5 as well as /temperature 0.5
        name, _, value = name.partition("=")
    name = name.replace("-", "_")
    if name in ("help", "?"):
        print(CHAT_HELP)
    elif name == "settings" and value.strip():
        print("error: /settings shows them; /NAME VALUE sets one (/temperature 0.5)")
    elif name == "settings":
        print(", ".join(f"{k}={settings.get(k, getattr(SampleConfig(), k))}" for k in CHAT_SETTINGS))
    elif name in ("quit", "exit"):
        return False
    elif name in CHAT_SETTINGS:
        try:  # the flag's parser and SampleConfig's rules: the same words as the command line
            candidate = {**settings, name: convert(SampleConfig, name, value)}
            fields = SampleConfig.__dataclass_fields__  # the settings also hold --label / --source
            SampleConfig(**{k: v for k, v in candidate.items() if k in fields}).validate()
        except GentextError as exc:
            print(f"error: {exc}")
            return True
        settings.update(candidate)
        print(f"{name} = {settings[name]!r}")
    else:
        print(f"error: unknown command /{name}; /help lists them")
    return True


def chat_loop(model: TextModel, args: argparse.Namespace) -> int:
    """Type a prompt, watch the continuation stream in; /name value changes a setting."""
    settings = {**sample_settings(args, args.temperature[0]), "num_samples": 1}
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"gentext chat — {args.run}. {CHAT_HELP}", file=sys.stderr)
    last = ""
    while True:
        try:
            line = input("> " if interactive else "")
        except EOFError:
            print(file=sys.stderr)
            return 0
        if line.startswith("/") and not (model.captions and Path(line.strip()).is_file()):  # a picture's path
            if not _chat_command(line, settings):
                return 0
            continue
        prompt = line if line else last
        last = prompt
        # a seq2seq run translates each line and a captioner captions the picture a line names:
        # the line is the condition, not a prompt to continue
        if model.pairs or model.captions:
            prompt, turn = "", {**settings, ("source" if model.pairs else "image"): prompt.strip()}
        else:
            turn = settings
        try:
            for piece in model.stream(prompt, **turn):
                sys.stdout.write(piece)
                sys.stdout.flush()
        except GentextError as exc:
            print(f"error: {exc}")
            continue
        sys.stdout.write("\n")


def cmd_chat(args: argparse.Namespace) -> int:
    return chat_loop(load_run(args, args.run), args)


def cmd_score(args: argparse.Namespace) -> int:
    if (args.text is None) == (args.file is None):
        raise GentextError("give the text to score, or --file PATH (one of them)")
    if args.file:
        from gentext.data.corpus import read_text

        text = read_text([args.file])
    else:
        text = args.text
    # fp32 unless --weights is typed: a score reproduces training's numbers; --weights X measures X
    model = load_run(args, args.run, weights="fp32")
    result = model.score(text, unknown=args.unknown, label=args.label, source=args.source, image=args.image)
    if args.json:
        print_json(result)
    else:
        print(
            f"log-probability {result['log_prob']:.2f} nats | {result['loss']:.4f} nats/token | "
            f"perplexity {result['perplexity']:.2f} | {result['bpc']:.4f} bits/char | {result['tokens']} tokens"
        )
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    model = load_run(args, args.run)
    results = []
    for image in args.images:
        captions = model.caption(image, **sample_settings(args, args.temperature[0]))
        results.append({"image": image, "captions": captions})
    if args.json:
        print_json({"results": results})
        return 0
    for result in results:
        for text in result["captions"]:
            print(f"{result['image']}: {text}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("generate", help="sample text from a trained run")
    p.add_argument("run", help="run directory")
    p.add_argument("--prompt", default="", help="text to continue (the output starts with it)")
    p.add_argument("--stream", action="store_true", help="print tokens as they are produced")
    p.add_argument("--interactive", action="store_true", help="same as `gentext chat`")
    p.add_argument("--source-file", help="a seq2seq run: translate each line of this file, one output line each")
    p.add_argument("--json", action="store_true")
    add_sampling_arguments(p)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("caption", help="describe pictures with a run trained with --condition image")
    p.add_argument("run")
    p.add_argument("images", nargs="+", help="PNG or JPEG files, any size")
    p.add_argument("--json", action="store_true")
    add_sampling_arguments(p)
    p.set_defaults(func=cmd_caption)

    p = sub.add_parser("chat", help="interactive: type prompts, change settings with /temperature 0.5 ...")
    p.add_argument("run")
    add_sampling_arguments(p, samples=False)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("score", help="log-probability, loss per token and bits per character of a text")
    p.add_argument("run")
    p.add_argument("text", nargs="?", help="the text to score")
    p.add_argument("--file", help="score the text of this file instead")
    p.add_argument("--unknown", **UNKNOWN_FLAG)
    p.add_argument("--label", help="score the text as generated from this label (a labelled run)")
    p.add_argument("--source", help="score the text as the translation of this source (a seq2seq run)")
    p.add_argument("--image", help="score the text as a caption of this picture (a captioning run)")
    add_options(p, LoadConfig, defaults={"weights": "fp32"})  # score reproduces training's numbers
    p.add_argument("--json", action="store_true", help="with per-token values")
    p.set_defaults(func=cmd_score)
