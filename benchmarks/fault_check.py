"""Faults a laptop or a shared machine brings, each done for real, with what the user saw and lost.

    python benchmarks/fault_check.py             # 20 kills of a training, and the rest (~3 minutes)
    python benchmarks/fault_check.py --kills 5   # fewer kills

1. SIGKILL at a random moment of a training that saves every 5 steps, 20 times in a row, each time
   followed by `--resume` (or, where the run was killed before its first checkpoint, by what the
   error says to do); at the end the run must load and generate.
2. The same for `gentext export` (SIGKILL mid-write: the old model.onnx or none, never a torn one)
   and for `gentext serve --workers 2` (a killed worker is replaced; the server keeps answering).
3. A full disk (a tmpfs of 600 KB where this machine lets us mount one; else a file-size limit)
   while a new run saves, and while an existing run saves its next checkpoint.
4. A token-cache file cut short, and one overwritten.
A row's "lost" is what a user would have to redo; every row should say "nothing".
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GENTEXT = [sys.executable, "-m", "gentext"]
SHAPE = ["--hidden-size", "64", "--embed-size", "16", "--num-layers", "1", "--batch-size", "8", "--seq-len", "32",
         "--mix-markov", "0"]  # fmt: skip
BUDGET = ["--steps", "100000", "--save-every", "5", "--eval-every", "10", "--quiet"]  # never reached by a kill
RESUME = ["--resume", *BUDGET]  # what --resume may set
TRAIN = [*SHAPE, *BUDGET]


def run(args: list[str], env: dict, timeout: float = 300, limit: int | None = None) -> subprocess.CompletedProcess:
    def cap():  # a file-size limit stands in for a full disk where no tmpfs can be mounted
        if limit is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run([*GENTEXT, *args], env=env, capture_output=True, text=True, timeout=timeout, preexec_fn=cap)


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:110] if lines else ""


def kill_loop(corpus: Path, where: Path, env: dict, kills: int, rng: random.Random) -> list[tuple]:
    run_dir = where / "killed"
    rows, started = [], False
    for i in range(kills):
        command = [*GENTEXT, "train", str(corpus), "--out", str(run_dir), *(RESUME if started else [*TRAIN, "--force"])]
        proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.5, 6.0))
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate()
        started = (run_dir / "train_state.safetensors").exists()
        saw = f"killed; its metrics reach step {_step(run_dir)}" if proc.returncode < 0 else last_line(err)
        rows.append((f"SIGKILL #{i + 1} of a training", saw, ""))
    last = [*(RESUME if started else [*TRAIN, "--force"]), "--steps", str(_step(run_dir) + 20)]  # now to an end
    finish = run(["train", str(corpus), "--out", str(run_dir), *last], env)
    generated = run(["generate", str(run_dir), "--max-new-tokens", "20", "--seed", "1"], env)
    lost = "nothing" if finish.returncode == 0 and generated.returncode == 0 else "the run"
    steps = json.loads((run_dir / "config.json").read_text()).get("result", {}).get("steps", "?")
    saw = f"exit {finish.returncode}: trained to step {steps}, then generates"
    if lost != "nothing":
        saw = last_line(finish.stderr + generated.stderr)
    rows.append((f"--resume after {kills} kills", saw, lost))
    return rows


def _step(run_dir: Path) -> int:
    """The last step the run's metrics recorded (0 when none)."""
    steps = [json.loads(line).get("step", 0) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
             if line.startswith("{")] if (run_dir / "metrics.jsonl").exists() else []  # fmt: skip
    return max(steps, default=0)


def export_kills(run_dir: Path, env: dict, rng: random.Random) -> tuple:
    outcomes = set()
    for _ in range(5):
        proc = subprocess.Popen([*GENTEXT, "export", str(run_dir)], env=env, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        leftovers = [p.name for p in run_dir.iterdir() if p.name.startswith(".model.onnx")]
        outcomes.add("torn temporary left" if leftovers else "clean")
    final = run(["export", str(run_dir)], env)
    lost = "nothing" if final.returncode == 0 and (run_dir / "model.onnx").stat().st_size > 0 else "the export"
    return ("SIGKILL x5 of an export, then an export", ", ".join(sorted(outcomes)), lost)


def worker_kill(run_dir: Path, env: dict) -> tuple:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*GENTEXT, "serve", str(run_dir), "--port", str(port), "--workers", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(url + "/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        os.kill(_workers(server.pid)[0], signal.SIGKILL)
        time.sleep(8)
        answered = sum(_ok(url) for _ in range(20))
        alive = len(_workers(server.pid))
        return ("SIGKILL of one of 2 server workers", f"{answered}/20 requests answered, {alive} workers after",
                "nothing" if answered == 20 else "requests")  # fmt: skip
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def _workers(supervisor: int) -> list[int]:
    """The server's worker processes (uvicorn spawns them; multiprocessing's resource tracker is not one)."""
    found = subprocess.run(["pgrep", "-P", str(supervisor), "-f", "spawn_main"], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _ok(url: str) -> bool:
    import urllib.request

    body = json.dumps({"prompt": "the ", "max_new_tokens": 5}).encode()
    request = urllib.request.Request(url + "/v1/generate", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status == 200
    except OSError:
        return False


def full_disk(corpus: Path, where: Path, env: dict) -> list[tuple]:
    """A new run and a run's next save, onto a disk with no room."""
    small = where / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(small)], capture_output=True)
    limit = None if mounted.returncode == 0 else 300_000
    how = "a 600 KB tmpfs" if limit is None else "a 300 KB file-size limit"
    rows = []
    try:
        new = run(["train", str(corpus), "--out", str(small / "new"), *SHAPE, "--hidden-size", "256", "--steps", "10"],
                  env, limit=limit)  # fmt: skip
        left = "no folder left" if not (small / "new").exists() else "a folder left"
        rows.append((f"full disk while a new run saves ({how})", f"exit {new.returncode}: {last_line(new.stderr)}",
                     "nothing" if new.returncode == 2 and left == "no folder left" else left))  # fmt: skip
        good = where / "good"
        run(["train", str(corpus), "--out", str(good), *SHAPE, "--steps", "10", "--quiet"], env)
        before = (good / "model.safetensors").read_bytes()
        cap = (good / "model.safetensors").stat().st_size + 1000 if limit is not None else None
        if limit is None:  # the same run continued on the full disk: its files moved there
            subprocess.run(["cp", "-r", str(good), str(small / "good")], check=False)
            good = small / "good"
        later = run(["train", str(corpus), "--out", str(good), *RESUME, "--steps", "200"], env, limit=cap)
        intact = run(["generate", str(good), "--max-new-tokens", "5"], env).returncode == 0
        kept = (good / "model.safetensors").read_bytes() == before or intact
        rows.append(
            (
                f"full disk while a run saves its next checkpoint ({how})",
                f"exit {later.returncode}: {last_line(later.stderr)}",
                "nothing (the last good checkpoint loads)" if later.returncode == 2 and kept else "the run",
            )
        )
    finally:
        if limit is None:
            subprocess.run(["umount", str(small)], capture_output=True)
    return rows


def damaged_cache(corpus: Path, where: Path, env: dict) -> list[tuple]:
    rows = []
    for damage in ("cut short", "overwritten"):
        out = where / f"cache-{damage.split()[0]}"
        run(["train", str(corpus), "--out", str(out), *SHAPE, "--steps", "2"], env)
        entry = next((Path(env["GENTEXT_CACHE"]) / "tokens").iterdir())
        train_bin = entry / "train.bin"
        data = train_bin.read_bytes()
        train_bin.write_bytes(data[: len(data) // 2] if damage == "cut short" else bytes(len(data)))
        again = run(["train", str(corpus), "--out", str(out), *SHAPE, "--steps", "2", "--force"], env)
        said = next((line for line in again.stderr.splitlines() if "damaged" in line), last_line(again.stderr))
        rows.append((f"token cache file {damage}", f"exit {again.returncode}: {said[:100]}",
                     "nothing" if again.returncode == 0 else "the run"))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        corpus = where / "text.txt"
        corpus.write_text("".join(f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(3000)))
        env = {**os.environ, "GENTEXT_CACHE": str(where / "cache"), "GENTEXT_NATIVE": "off"}
        rows = kill_loop(corpus, where, env, args.kills, rng)
        rows.append(export_kills(where / "killed", env, rng))
        rows.append(worker_kill(where / "killed", env))
        rows += full_disk(corpus, where, env)
        rows += damaged_cache(corpus, where, {**env, "GENTEXT_CACHE": str(where / "cache2")})
    print("| fault | what the user saw | lost |\n|---|---|---|")
    for fault, saw, lost in rows:
        print(f"| {fault} | {saw.replace('|', '/')} | {lost} |")


if __name__ == "__main__":
    main()
