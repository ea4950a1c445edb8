"""Generation speed of a run as a user samples it (its network, neural cache and chain) beside its
network alone, in one run.

The default command's run is mixed after training (docs/training.md): every token then runs the
network's step, the cache's product over its window and the chain's row, and the mixture; none of
that runs ahead in a compiled call as the network alone does. The baseline is the same run loaded
with `network_only` (what `--no-mix` generates): the plain recurrent step, the fastest path this
run has. Both generate the same tokens a stream from the same prompt, in rounds that alternate
them, the best round of each kept (a shared machine's speed drifts within a minute).

    python benchmarks/bench_mixed.py RUN [--tokens 1000] [--streams 16] [--rounds 3] [--top-p 0.9] [--prompt TEXT]
    python benchmarks/bench_mixed.py --tiny      # trains a tiny run first (a smoke test)

`--top-p` samples under a setting chosen in Python, whose tokens do not run ahead (each is read in
one call of the mixed step instead). `--prompt` ["The "]: a gated cache is heard only where it holds
half a window of given text, so a short prompt's samples never read the window; a long one's do.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench_cache_samples import tiny_run  # a tiny run with a cache and a chain

from gentext import native, threads


def speeds(run: Path, args) -> dict[str, dict[int, float]]:
    """tokens/s of each way of loading the run, for one stream and for `args.streams`."""
    import gentext

    models = {"as sampled": gentext.load(run), "network alone": gentext.load(run, network_only=True)}
    best = {name: dict.fromkeys((1, args.streams), float("inf")) for name in models}
    for _ in range(args.rounds):
        for streams in (1, args.streams):
            for name, model in models.items():
                start = time.perf_counter()
                settings = dict(max_new_tokens=args.tokens, temperature=1.0, top_p=args.top_p, seed=1)
                model.generate(args.prompt, num_samples=streams, **settings)
                best[name][streams] = min(best[name][streams], time.perf_counter() - start)
    return {name: {n: n * args.tokens / s for n, s in row.items()} for name, row in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", help="a trained run (mixed with a chain, with or without a cache)")
    parser.add_argument("--tokens", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling (1: off, the tokens run ahead)")
    parser.add_argument("--prompt", default="The ", help="what every stream continues (a long one fills the cache)")
    parser.add_argument("--tiny", action="store_true", help="train a tiny run and generate a little (smoke test)")
    args = parser.parse_args()
    if args.tiny:
        args.tokens, args.streams, args.rounds = 20, 4, 1
    elif args.run is None:
        parser.error("give a RUN, or --tiny")
    threads.prepare()
    time.sleep(0.5)  # a first look at what else runs (threads.configure)
    threads.configure()
    native.prepare(wait=not args.tiny)  # the compiled kernels, built now if they are not yet
    with tempfile.TemporaryDirectory() as tmp:
        run = tiny_run(Path(tmp)) if args.tiny else Path(args.run)
        import gentext

        parts = gentext.load(run).info()
        table = speeds(run, args)
    kinds = ", ".join(k for k in ("cache", "mixture") if parts.get(k))
    top_p = "" if args.top_p == 1.0 else f", top-p {args.top_p:g}"
    print(f"{run}: {parts['model']['kind']} + {kinds or 'nothing mixed'}; {args.tokens} tokens a stream, T=1{top_p}, "
          f"from a prompt of {len(args.prompt):,} characters; "
          f"per-token kernels: {'compiled' if native.kernels() is not None else 'Python'}")  # fmt: skip
    alone = table["network alone"]
    print(f"| loaded | 1 stream tokens/s | vs alone | {args.streams} streams tokens/s | vs alone |")
    print("|---|---:|---:|---:|---:|")
    for name, row in table.items():
        one, many = row[1], row[args.streams]
        print(f"| {name} | {one:,.0f} | {one / alone[1]:.2f}x | {many:,.0f} | {many / alone[args.streams]:.2f}x |")


if __name__ == "__main__":
    main()
