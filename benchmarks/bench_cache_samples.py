"""What a run's neural cache does to its samples, beside the same run without the cache, in one run.

The held-out loss rewards a cache's spread over the followers of like states; a sample draws from
that spread. So this samples after a long prompt of held-out text, from the run as trained (its
network, cache and chain) and from a copy whose config.json drops the cache (network and chain,
as fitted), and scores the samples in ways that need no reference text:

- words: the share of their words (letters and apostrophes) that occur in the training text; a
  word spelled from pieces of others is new;
- names: where the text names its speakers on lines of their own ("ROMEO:"), the share of the
  sampled speaker lines whose name is real (in the training text or the prompt);
- judged: the samples' loss under the run's network alone, in float32 (nats per token);
- tokens/s: the batch's generation speed.

    python benchmarks/bench_cache_samples.py RUN [--samples 32] [--tokens 600] [--prompt-chars 3000] [--weights W]
    python benchmarks/bench_cache_samples.py --tiny      # trains a tiny run first (a smoke test)
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gentext

WORD = re.compile(r"[A-Za-z']+")
SPEAKER = re.compile(r"^([A-Z][A-Za-z ']*):$", re.M)


def without_cache(run: Path, where: Path) -> Path:
    """A copy of `run` whose config.json has no cache (the chain's weight as fitted with it)."""
    copy = where / "without_cache"
    shutil.copytree(run, copy)
    config = json.loads((copy / "config.json").read_text())
    config.pop("cache", None)
    (config.get("mixture") or {}).pop("cache_weight", None)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def row(run: Path, judge, prompt: str, training: str, args) -> dict:
    model = gentext.load(run, weights=args.weights)
    start = time.perf_counter()
    texts = model.generate(prompt, max_new_tokens=args.tokens, temperature=1.0, seed=3, num_samples=args.samples)
    seconds = time.perf_counter() - start
    samples = [t[len(prompt) :] for t in texts]
    known_words = set(WORD.findall(training))
    words = [w for s in samples for w in WORD.findall(s)]
    real_names = set(SPEAKER.findall(training)) | set(SPEAKER.findall(prompt))
    names = [n for s in samples for n in SPEAKER.findall(s)]
    return {
        "cache": "yes" if model.info()["cache"] else "no",
        "words": sum(w in known_words for w in words) / max(len(words), 1),
        "names": sum(n in real_names for n in names) / len(names) if real_names and names else None,
        "judged": statistics.mean(judge.evaluate(text=s)["loss"] for s in samples if s),
        "speed": args.samples * args.tokens / seconds,
    }


def tiny_run(where: Path) -> Path:
    out = where / "tiny"
    command = [sys.executable, "-m", "gentext", "train", "--out", str(out), "--steps", "40", "--hidden-size", "32"]
    subprocess.run([*command, "--neural-cache", "200", "--quiet"], check=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="a run trained with a neural cache")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=600)
    parser.add_argument("--prompt-chars", type=int, default=3000)
    parser.add_argument("--weights", default="auto", help="the generation step's weight format [auto]")
    parser.add_argument("--tiny", action="store_true", help="train a tiny run and sample a little (smoke test)")
    args = parser.parse_args()
    if args.tiny:
        args.samples, args.tokens, args.prompt_chars = 4, 30, 300
    elif args.run is None:
        parser.error("give a RUN, or --tiny")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        run = tiny_run(where) if args.tiny else Path(args.run)
        judge = gentext.load(run, network_only=True, weights="fp32")
        held_out = judge.held_out_text()
        prompt = held_out[-args.prompt_chars :]
        training = judge.training_text()
        rows = {"the run as trained": row(run, judge, prompt, training, args)}
        rows["the same run without its cache"] = row(without_cache(run, where), judge, prompt, training, args)
    print(f"{run}: {args.samples} samples of {args.tokens} tokens after {len(prompt):,} held-out characters, T=1")
    print("| model | cache | words in the training text | speaker names real | judged | tokens/s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        names = "—" if r["names"] is None else f"{r['names']:.0%}"
        print(f"| {name} | {r['cache']} | {r['words']:.1%} | {names} | {r['judged']:.3f} | {r['speed']:,.0f} |")


if __name__ == "__main__":
    main()
