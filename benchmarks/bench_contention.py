"""Two CPU-heavy jobs on one machine: each one's speed as a share of its speed alone.

    python benchmarks/bench_contention.py            # ~3 minutes on 2 cores
    python benchmarks/bench_contention.py --tiny     # seconds; what the test suite runs

Rows: two `gentext train` at once (each one's tokens/s against alone), and `gentext eval` beside a
training (its seconds against alone). Each row runs twice in this invocation:
- gentext: as shipped (threads chosen from the usable cores and adapted to the other work,
  idle OpenMP workers spin briefly; gentext/threads.py);
- plain: what any PyTorch program gets by default: every core's thread, libgomp's default spin
  (`--threads N` with GOMP_SPINCOUNT=300000, libgomp's own default).
Run it alone: anything else on the machine is a third job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from roofline import cpu_features  # noqa: E402

GENTEXT = [sys.executable, "-m", "gentext"]
SIZES = {
    "full": dict(steps=150, model=[], eval_chars=None),
    # tiny evaluates 4,000 characters: the plain row's eval beside a training is the slow one by design
    # (spinning workers), and on 40,000 it alone took minutes of the test suite.
    "tiny": dict(steps=6, model=["--hidden-size", "32", "--num-layers", "1", "--batch-size", "4"], eval_chars=4000),
}


def _env(plain: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")}
    if plain:
        env["GOMP_SPINCOUNT"] = "300000"
    return env


def _threads(plain: bool) -> list[str]:
    return ["--threads", str(len(os.sched_getaffinity(0)))] if plain else []


def _train(corpus: Path, out: Path, size: dict, plain: bool, steps: int | None = None) -> subprocess.Popen:
    command = [*GENTEXT, "train", str(corpus), "--out", str(out), "--force", "--json", "--sample-chars", "0"]
    command += ["--steps", str(steps or size["steps"]), "--eval-every", "100000", "--precision", "fp32"]
    command += size["model"] + _threads(plain)
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env(plain))


def _rate(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    assert proc.returncode == 0, f"gentext train failed ({proc.returncode})"
    return json.loads(out.strip().splitlines()[-1])["tokens_per_second"]


def _eval_seconds(run: Path, corpus: Path, plain: bool) -> float:
    start = time.perf_counter()
    command = [*GENTEXT, "eval", str(run), str(corpus), "--json", *_threads(plain)]
    subprocess.run(command, check=True, capture_output=True, env=_env(plain))
    return time.perf_counter() - start


def measure(corpus: Path, tmp: Path, size: dict, plain: bool, scored: Path) -> tuple[float, float, float, float, float]:
    """(train tokens/s alone, A together, B together, eval seconds alone, eval seconds beside a training).
    Alone is the mean of a run before and one after the pair: the machine's speed drifts."""
    before = _rate(_train(corpus, tmp / "alone", size, plain))
    a, b = _train(corpus, tmp / "a", size, plain), _train(corpus, tmp / "b", size, plain)
    together = _rate(a), _rate(b)
    # --tiny: once (a smoke test of the table, seconds of CI); full: also after, the drift averaged out
    alone = before if size is SIZES["tiny"] else (before + _rate(_train(corpus, tmp / "alone", size, plain))) / 2
    eval_alone = _eval_seconds(tmp / "alone", scored, plain)
    background = _train(corpus, tmp / "bg", size, plain, steps=size["steps"] * 100)
    time.sleep(3)  # the training is past its start-up
    try:
        eval_beside = _eval_seconds(tmp / "alone", scored, plain)
    finally:
        background.kill()
        background.wait()
    return (alone, *together, eval_alone, eval_beside)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    size = SIZES["tiny" if args.tiny else "full"]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        from gentext.data.corpus import load_builtin

        text = load_builtin("python-docs")[: 40_000 if args.tiny else 2_000_000]
        corpus.write_text(text, encoding="utf-8")
        scored = Path(tmp) / "scored.txt"  # what `eval` reads
        scored.write_text(text[: size["eval_chars"]], encoding="utf-8")
        rows = {
            name: measure(corpus, Path(tmp), size, plain, scored)
            for name, plain in (("gentext", False), ("plain", True))
        }
    print(f"CPU: {cpu_features()}; usable cores: {len(os.sched_getaffinity(0))}")
    print("| threads | train alone tok/s | two at once, A and B (share) | eval alone s | eval beside training s |")
    print("|---|---|---|---|---|")
    for name, (alone, a, b, eval_alone, eval_beside) in rows.items():
        pair = f"{a:,.0f}, {b:,.0f} ({a / alone:.0%}, {b / alone:.0%})"
        beside = f"{eval_beside:.1f} ({eval_alone / eval_beside:.0%})"
        print(f"| {name} | {alone:,.0f} | {pair} | {eval_alone:.1f} | {beside} |")


if __name__ == "__main__":
    main()
