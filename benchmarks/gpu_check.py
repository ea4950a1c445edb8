"""Run every path of gentext on a GPU once and print one table of what passed, with speeds.

    python benchmarks/gpu_check.py                 # on a machine with CUDA (about 5 minutes)
    python benchmarks/gpu_check.py --device cpu --precisions fp32 --tiny   # the same script on a CPU

For a char LSTM and a word-level adaptive-softmax LSTM, in each precision (bf16 and fp16 by
default): train with a mid-run evaluation and its sample -> resume -> generate (sampled, greedy,
beams, 64 streams) -> eval -> serve one HTTP request -> `torchrun --nproc-per-node 1` train.
Every step is the real CLI in a subprocess, so what fails here fails for users. The baseline
column is a plain PyTorch training loop of the same LSTM on the same device (tokens/s), run in
the same invocation. Record the printed table in benchmarks/RESULTS.md with the card's name.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

GENTEXT = [sys.executable, "-m", "gentext"]
MODELS = {
    "char-lstm": ["--hidden-size", "512", "--num-layers", "2", "--batch-size", "64", "--seq-len", "128"],
    "word-adaptive": [
        "--level", "word", "--hidden-size", "256", "--embed-size", "256", "--tie-weights",
        "--adaptive-softmax", "500,2000", "--batch-size", "32", "--seq-len", "35",
    ],
}  # fmt: skip


def _run(args: list[str], timeout: float = 600) -> tuple[bool, str, float]:
    start = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    seconds = time.perf_counter() - start
    tail = (proc.stderr.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, proc.stdout if proc.returncode == 0 else tail, seconds


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _serve_once(run: Path, device: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [*GENTEXT, "serve", str(run), "--port", str(port)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        body = json.dumps({"prompt": "The", "max_new_tokens": 20, "stream": True}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/generate", data=body)
        request.add_header("Content-Type", "application/json")
        for _ in range(300):
            try:
                return urllib.request.urlopen(request, timeout=60).read().decode()
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server never answered")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def check(name: str, flags: list[str], precision: str, device: str, steps: int, root: Path) -> list[tuple]:
    """One model in one precision through every command; rows of (check, ok, detail)."""
    run = root / f"{name}-{precision}"
    common = ["--device", device, "--precision", precision, "--quiet", "--json"]
    rows = []
    ok, out, secs = _run([*GENTEXT, "train", "--out", str(run), "--steps", str(steps), "--eval-every",
                          str(steps // 2), "--sample-chars", "40", *flags, *common])  # fmt: skip
    rows.append(
        ("train + mid-run eval/sample", ok, f"{_last_json(out)['tokens_per_second']:,.0f} tok/s" if ok else out)
    )
    if not ok:
        return rows
    ok, out, _ = _run([*GENTEXT, "train", "--out", str(run), "--resume", "--steps", str(steps + 20), "--quiet"])
    rows.append(("resume", ok, "" if ok else out))
    gen = [*GENTEXT, "generate", str(run), "--prompt", "The", "--device", device, "--json", "--seed", "1"]
    for label, extra in (
        ("generate sampled", []),
        ("generate greedy", ["--temperature", "0"]),
        ("generate beams", ["--num-beams", "4"]),
        ("generate 64 streams", ["--num-samples", "64", "--max-new-tokens", "200"]),
    ):
        ok, out, secs = _run([*gen, *extra])
        detail = f"{64 * 200 / secs:,.0f} tok/s incl. start-up" if ok and "64" in label else ("" if ok else out)
        rows.append((label, ok, detail))
    ok, out, _ = _run([*GENTEXT, "eval", str(run), "--device", device, "--json"])
    rows.append(("eval", ok, f"loss {_last_json(out)['loss']:.3f}" if ok else out))
    try:
        events = _serve_once(run, device)
        rows.append(("serve (SSE)", "event: done" in events, ""))
    except Exception as exc:  # noqa: BLE001 -- a row of the table, not a crash of the check
        rows.append(("serve (SSE)", False, str(exc)))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", "gentext"]
    ok, out, _ = _run([*launch, "train", "--out", str(run) + "-ddp", "--steps", "20", *flags, *common])
    rows.append(("torchrun --nproc-per-node 1", ok, "" if ok else out))
    return rows


def plain_baseline(device: str, tiny: bool) -> float:
    """Tokens/s of a hand-written training loop of the char LSTM (fp32, random ids)."""
    hidden, batch, seq, vocab = (64, 8, 32, 100) if tiny else (512, 64, 128, 100)
    torch.manual_seed(0)
    emb, rnn, head = torch.nn.Embedding(vocab, 64), torch.nn.LSTM(64, hidden, 2, batch_first=True), None
    head = torch.nn.Linear(hidden, vocab)
    modules = torch.nn.ModuleList([emb, rnn, head]).to(device)
    opt = torch.optim.AdamW(modules.parameters(), lr=1e-3)
    ids = torch.randint(0, vocab, (batch, seq + 1), device=device)
    steps = 5 if tiny else 50
    for i in range(steps + 3):
        if i == 3:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        y, _ = rnn(emb(ids[:, :-1]))
        loss = torch.nn.functional.cross_entropy(head(y).flatten(0, 1), ids[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return steps * batch * seq / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--tiny", action="store_true", help="small models and few steps (a CPU smoke run)")
    parser.add_argument("--models", default=",".join(MODELS), help="which of: " + ", ".join(MODELS))
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run this on a machine with a GPU (or pass --device cpu for a smoke run)")
        return 0
    card = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"device: {card}; torch {torch.__version__}")
    models = MODELS
    if args.tiny:
        small = [
            "--hidden-size",
            "32",
            "--embed-size",
            "32",
            "--num-layers",
            "1",
            "--batch-size",
            "4",
            "--seq-len",
            "16",
        ]
        models = {"char-lstm": small, "word-adaptive": ["--level", "word", "--adaptive-softmax", "50,200", *small]}
        args.steps = min(args.steps, 20)
    baseline = plain_baseline(args.device, args.tiny)
    print(f"plain PyTorch fp32 LSTM training loop: {baseline:,.0f} tokens/s\n")
    print("| model | precision | check | result | detail |")
    print("|---|---|---|---|---|")
    failures = 0
    with tempfile.TemporaryDirectory() as root:
        os.environ.setdefault("GENTEXT_CACHE", str(Path(root) / "cache"))  # removed with the rest
        for precision in args.precisions.split(","):
            for name, flags in ((n, models[n]) for n in args.models.split(",")):
                for label, ok, detail in check(name, flags, precision, args.device, args.steps, Path(root)):
                    failures += not ok
                    print(f"| {name} | {precision} | {label} | {'pass' if ok else 'FAIL'} | {detail} |", flush=True)
    print(f"\n{failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
