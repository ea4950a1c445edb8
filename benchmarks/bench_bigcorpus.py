"""Training on a corpus larger than one wants in memory: peak RSS and tokenization speed.

    python benchmarks/bench_bigcorpus.py                # a 1 GB text file (Tiny Shakespeare repeated)
    python benchmarks/bench_bigcorpus.py --mb 4         # seconds; what the test suite runs

Each measurement is its own process, so its peak RSS (max resident set, from wait4) is its own:

- plain: what a hand-written script does (char-rnn, notebooks): read the file into one string,
  map it to an int64 id tensor with numpy, cut B streams out of it.
- gentext, cold: `gentext train FILE --steps N` with an empty token cache: the corpus is streamed
  once to hash it and fit the vocabulary, once more to encode it to a uint8 memmap, then trained on.
- gentext, warm: the same command again: the cache is reused, nothing is encoded.

- passes: the two passes over the corpus timed on their own, in a process of their own (no
  training, no evaluation): hashing + fitting the vocabulary, then encoding into the cache. The
  plain baseline's encode (numpy on the whole string in memory) is timed in the same way.

Tokenization speed = file size / seconds of the encoding pass. (cold - warm) is printed too, but
two training runs of a minute differ by more than the pass takes, so it is the rough figure.
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

PASSES = """
import sys, time
from gentext.config import CorpusConfig, TokenizerConfig
from gentext.data.corpus import Shaping, open_corpus
from gentext.data.tokencache import fingerprint_and_fit, token_data
from gentext.data.tokenizers import fit_tokenizer
config = CorpusConfig(paths=[sys.argv[1]])
source = open_corpus(config, Shaping())
start = time.perf_counter()
content, tok = fingerprint_and_fit(source, config, lambda pieces: fit_tokenizer(TokenizerConfig(), pieces))
middle = time.perf_counter()
token_data(source, config, tok, content, progress=False)
print(middle - start, time.perf_counter() - middle)
"""

PLAIN_ENCODE = """
import sys, time, numpy as np
text = open(sys.argv[1], encoding="utf-8").read()
start = time.perf_counter()
codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
chars = np.nonzero(np.bincount(codepoints))[0]
lookup = np.zeros(chars[-1] + 1, dtype=np.int64)
lookup[chars] = np.arange(len(chars))
ids = lookup[codepoints]
print(time.perf_counter() - start)
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


def run_output(command: list[str], env: dict[str, str]) -> str:
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(command[:2])}\n{proc.stderr}")
    return proc.stdout.strip()


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
        train += ["--mix-markov", "0"]  # no chain above 20M tokens anyway; on --mb 0.5 it was most of the time
        plain = measure([sys.executable, "-c", PLAIN, str(corpus)], env)
        cold = measure(train, env)
        warm = measure(train, env)
        passes = [
            float(x)
            for x in run_output(
                [sys.executable, "-c", PASSES, str(corpus)], {**env, "GENTEXT_CACHE": str(tmp / "c2")}
            ).split()
        ]
        plain_encode = float(run_output([sys.executable, "-c", PLAIN_ENCODE, str(corpus)], env))
    print(
        f"{size_mb:,.0f} MB text file; gentext: 2x256 char LSTM, {args.steps} steps of 32 x 64; "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
    )
    print("| run | wall s | peak RSS (MB) |")
    print("|---|---:|---:|")
    print(f"| plain: read + numpy encode to int64 ids | {plain[0]:,.1f} | {plain[1]:,.0f} |")
    print(f"| gentext train, empty token cache | {cold[0]:,.1f} | {cold[1]:,.0f} |")
    print(f"| gentext train, cache reused | {warm[0]:,.1f} | {warm[1]:,.0f} |")
    print("\n| pass over the corpus | seconds | MB/s |")
    print("|---|---:|---:|")
    print(
        f"| plain: numpy encode of the string already in memory | {plain_encode:,.2f} | {size_mb / plain_encode:,.1f} |"
    )
    print(f"| gentext: read + hash + fit the vocabulary | {passes[0]:,.2f} | {size_mb / passes[0]:,.1f} |")
    print(f"| gentext: read + encode into the token cache | {passes[1]:,.2f} | {size_mb / passes[1]:,.1f} |")
    rough = f"{size_mb / (cold[0] - warm[0]):,.1f}" if cold[0] > warm[0] else "below the noise"
    print(
        f"tokenization (the encoding pass): {size_mb / passes[1]:,.1f} MB/s (cold - warm: {rough}); "
        f"peak RSS ratio gentext/plain: {cold[1] / plain[1]:.2f}"
    )


if __name__ == "__main__":
    main()
