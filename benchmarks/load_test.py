"""Load test of `gentext serve` on 127.0.0.1: N concurrent clients for a bounded time.

    python benchmarks/load_test.py [RUN] --seconds 10 --clients 2 --clients 14

Starts the server (limits: 2 generations at once, 8 queued), then for each client count runs
that many threads posting /v1/generate (64 new tokens) until the time is up, and prints
requests/s, p50/p99 latency and counts by status. Under the limit there should be no errors;
above it, fast 503s and a server whose /healthz still answers. Without RUN it trains a small
model on the built-in corpus first (about 20 seconds). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter


def post(url: str, body: dict) -> tuple[int, float]:
    start = time.perf_counter()
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except OSError:
        status = 0  # connection error
    return status, time.perf_counter() - start


def run_clients(base: str, clients: int, seconds: float, tokens: int) -> dict:
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        while time.perf_counter() < deadline:
            outcome = post(base + "/v1/generate", {"prompt": "The ", "max_new_tokens": tokens, "seed": i})
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    ok = sorted(latency for status, latency in results if status == 200)
    refused = sorted(latency for status, latency in results if status == 503)

    def pct(values, q):
        return values[min(int(q * len(values)), len(values) - 1)] * 1000 if values else float("nan")

    return {
        "clients": clients,
        "requests": len(results),
        "rps": len(results) / elapsed,
        "ok_p50_ms": pct(ok, 0.5),
        "ok_p99_ms": pct(ok, 0.99),
        "refused_p99_ms": pct(refused, 0.99),
        "status": dict(Counter(status for status, _ in results)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, action="append")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    client_counts = args.clients or [2, 14]
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = f"{tmp}/run"
            subprocess.run(
                [sys.executable, "-m", "gentext", "train", "--out", run, "--steps", "150", "--quiet"], check=True
            )
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gentext",
                "serve",
                run,
                "--port",
                str(port),
                "--max-concurrency",
                "2",
                "--max-queue",
                "8",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(150):
                try:
                    urllib.request.urlopen(base + "/healthz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            print("| clients | requests | requests/s | p50 ms (200) | p99 ms (200) | p99 ms (503) | statuses |")
            print("|---:|---:|---:|---:|---:|---:|---|")
            for clients in client_counts:
                r = run_clients(base, clients, args.seconds, args.tokens)
                print(
                    f"| {r['clients']} | {r['requests']} | {r['rps']:.1f} | {r['ok_p50_ms']:.0f} | "
                    f"{r['ok_p99_ms']:.0f} | {r['refused_p99_ms']:.0f} | {r['status']} |"
                )
            health = urllib.request.urlopen(base + "/healthz", timeout=5).status
            print(f"/healthz after the load: {health}")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
