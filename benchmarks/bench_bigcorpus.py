"""Training on a corpus larger than one wants in memory: peak RSS and tokenization speed.

    python benchmarks/bench_bigcorpus.py                # a 1 GB text file (Tiny Shakespeare repeated)
    python benchmarks/bench_bigcorpus.py --mb 4         # seconds; what the test suite runs

Each measurement is its own process, so its peak RSS (max resident set, from wait4) is its own:

- plain: what a hand-written script does (char-rnn, notebooks): read the file into one string,
  map it to an int64 id tensor with numpy, cut B streams out of it.
- gentext, cold: `gentext train FILE --steps N` with an empty token cache: the corpus is streamed
  once to hash it and fit the vocabulary, once more to encode it to a uint8 memmap, then trained on.
- gentext, warm: the same command again: the cache is reused, nothing is encoded.

Tokenization speed = file size / (cold - warm) seconds: the encoding pass alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"

PLAIN = """
import sys, numpy as np, torch
text = open(sys.argv[1], encoding="utf-8").read()
codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
chars = np.nonzero(np.bincount(codepoints))[0]  # the vocabulary, without a Python loop
lookup = np.zeros(chars[-1] + 1, dtype=np.int64)
lookup[chars] = np.arange(len(chars))
ids = torch.from_numpy(lookup[codepoints])
rows = ids[: len(ids) // 64 * 64].view(64, -1)
print(rows.shape, rows.dtype)
"""


def make_corpus(path: Path, megabytes: float) -> None:
    if SHARED.exists():
        block = SHARED.read_bytes()
    else:  # the built-in corpus, where ../shared is absent
        from gentext.data.corpus import load_builtin

        block = load_builtin("python-docs").encode("utf-8")
    target = int(megabytes * 1e6)
    with open(path, "wb") as f:
        written = 0
        while written < target:
            piece = block[: target - written]
            f.write(piece)
            written += len(piece)


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process; its output is passed through on failure."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    output = proc.stdout.read()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(command)}\n{output}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=1000.0, help="corpus size in MB (default 1000)")
    parser.add_argument("--steps", type=int, default=200, help="training steps of the gentext runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "big.txt"
        make_corpus(corpus, args.mb)
        size_mb = corpus.stat().st_size / 1e6
        env = {**os.environ, "GENTEXT_CACHE": str(tmp / "cache")}
        train = [sys.executable, "-m", "gentext", "train", str(corpus), "--out", str(tmp / "run"), "--force"]
        train += ["--steps", str(args.steps), "--eval-every", str(args.steps), "--quiet"]
        train += ["--hidden-size", "256", "--batch-size", "32", "--seq-len", "64"]
        plain = measure([sys.executable, "-c", PLAIN, str(corpus)], env)
        cold = measure(train, env)
        warm = measure(train, env)
    print(
        f"{size_mb:,.0f} MB text file; gentext: 2x256 char LSTM, {args.steps} steps of 32 x 64; "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| run | wall s | peak RSS (MB) |")
    print("|---|---:|---:|")
    print(f"| plain: read + numpy encode to int64 ids | {plain[0]:,.1f} | {plain[1]:,.0f} |")
    print(f"| gentext train, empty token cache | {cold[0]:,.1f} | {cold[1]:,.0f} |")
    print(f"| gentext train, cache reused | {warm[0]:,.1f} | {warm[1]:,.0f} |")
    encode_s = max(cold[0] - warm[0], 1e-9)
    print(
        f"tokenization (the encoding pass): {size_mb / encode_s:,.1f} MB/s; peak RSS ratio gentext/plain: "
        f"{cold[1] / plain[1]:.2f}"
    )


if __name__ == "__main__":
    main()
