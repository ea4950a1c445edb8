"""Load test of `gentext serve` on 127.0.0.1: N concurrent clients for a bounded time.

    python benchmarks/load_test.py [RUN] --seconds 10 --clients 2 --clients 14
    python benchmarks/load_test.py [RUN] --stream --seconds 10      # 1, 8, 32, 64 streaming clients,
                                                                    # batching server vs --no-batching
    python benchmarks/load_test.py [RUN] --stream --workers 2       # + the batching server in 2 processes
    python benchmarks/load_test.py [RUN] --beams 4 --clients 16     # beam requests, batched vs one at a time

Streaming mode starts the server twice, one request at a time (`--no-batching`: a batch of one row)
and with continuous batching, both admitting as many requests as there are clients, and for each
client count reports aggregate generated tokens/s, time to first token p50/p99, the p99 gap
between tokens, errors, and how many texts differ from the same request made alone (same seed).
Beam mode does the same with JSON beam-search requests (each request `num_beams` rows).

Starts the server (limits: 2 generations at once, 8 queued), then for each client count runs
that many threads posting /v1/generate (64 new tokens) until the time is up, and prints
requests/s, p50/p99 latency and counts by status. Under the limit there should be no errors;
above it, fast 503s and a server whose /healthz still answers. Without RUN it trains a small
model on the built-in corpus first (about 20 seconds). Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter

from servers import start_server, stream_once  # noqa: I001 -- benchmarks/ is on the path when run as a script


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


def drive(clients: int, seconds: float, request) -> tuple[list, float]:
    """`clients` threads calling `request(i)` back to back until `seconds` are up; every outcome
    and the time it took in all."""
    results: list = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(i: int) -> None:
        while time.perf_counter() < deadline:
            outcome = request(i)
            with lock:
                results.append(outcome)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, time.perf_counter() - start


def run_clients(base: str, clients: int, seconds: float, tokens: int) -> dict:
    body = {"prompt": "The ", "max_new_tokens": tokens}
    results, elapsed = drive(clients, seconds, lambda i: post(base + "/v1/generate", {**body, "seed": i}))
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


def stream_clients(port: int, clients: int, seconds: float, tokens: int, expected: dict[int, str]) -> dict:
    body = {"prompt": "The ", "max_new_tokens": tokens, "temperature": 1.0, "stream": True}
    records, elapsed = drive(clients, seconds, lambda i: (i % 8, *stream_once(port, {**body, "seed": i % 8})))
    firsts = sorted(r[2] for r in records if r[2] is not None)
    gaps = sorted(g for r in records for g in r[3])

    def pct(values, q):
        return values[min(int(q * len(values)), len(values) - 1)] * 1000 if values else float("nan")

    return {
        "clients": clients,
        "tokens_per_s": sum(tokens for r in records if r[4]) / elapsed,  # char model: a token a character
        "ttft_p50": pct(firsts, 0.5),
        "ttft_p99": pct(firsts, 0.99),
        "gap_p99": pct(gaps, 0.99),
        "errors": sum(not r[4] for r in records),
        "streams": len(records),
        "differ": sum(r[4] and r[1] != expected[r[0]] for r in records),
    }


def streaming(run: str, client_counts: list[int], seconds: float, tokens: int, weights: str, every: bool, workers: int):
    import gentext

    model = gentext.load(run, weights=weights)  # the format the servers load too: same texts
    expected = {
        seed: model.generate("The ", max_new_tokens=tokens, seed=seed, temperature=1.0)[0][4:] for seed in range(8)
    }
    most = str(max(client_counts))
    print(
        f"streaming, {tokens} new tokens per request, {seconds:g} s per row; both servers: --max-concurrency {most} "
        f"(and as many batch rows) "
        f"--weights {weights} (took {model.weights})"
    )
    print("| server | clients | streams | tokens/s | TTFT p50 ms | TTFT p99 ms | inter-token p99 ms | errors "
          "| texts differing |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    servers = [("one request at a time", ["--no-batching"]), ("continuous batching", [])]
    if every:  # the same server sending one event per token (before issue 27's --stream-interval)
        servers.append(("continuous batching, an event per token", ["--stream-interval", "0"]))
    if workers > 1:  # the same server in several processes (one is held to about a core by the GIL)
        servers.append((f"continuous batching, {workers} workers", ["--workers", str(workers)]))
    for name, flags in servers:
        limits = ["--max-concurrency", most, "--max-queue", most, "--max-batch-rows", most]
        server, port = start_server(run, *limits, "--weights", weights, *flags)
        try:
            for clients in client_counts:
                r = stream_clients(port, clients, seconds, tokens, expected)
                print(
                    f"| {name} | {clients} | {r['streams']} | {r['tokens_per_s']:,.0f} | {r['ttft_p50']:.0f} | "
                    f"{r['ttft_p99']:.0f} | {r['gap_p99']:.1f} | {r['errors']} | {r['differ']} |",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


def beams(run: str, client_counts: list[int], seconds: float, tokens: int, weights: str, width: int) -> None:
    """JSON beam-search requests from N clients: batched (a request is `width` rows of the batch)
    against one request at a time, every result compared with the same search made alone."""
    import gentext

    model = gentext.load(run, weights=weights)
    prompts = ["The ", "A ", "the ", "a "]
    expected = {p: model.generate(p, max_new_tokens=tokens, num_beams=width)[0] for p in prompts}
    most = max(client_counts)
    print(f"beam search, {width} beams, {tokens} new tokens, {seconds:g} s per row, --weights {weights} "
          f"(took {model.weights})")  # fmt: skip
    print("| server | clients | requests | requests/s | p50 ms | p99 ms | most rows in a step | errors | differing |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, flags in [("one request at a time", ["--no-batching"]), ("continuous batching", [])]:
        rows = str(most * width)
        limits = ["--max-concurrency", str(most), "--max-queue", str(most), "--max-batch-rows", rows]
        server, port = start_server(run, *limits, "--max-num-beams", str(width), "--weights", weights, *flags)
        ask = functools.partial(_beam_request, f"http://127.0.0.1:{port}/v1/generate", tokens=tokens, width=width)
        try:
            for clients in client_counts:
                results, elapsed = drive(clients, seconds, lambda i: ask(prompts[i % 4]))  # noqa: B023 -- called at once
                ok = sorted(r[1] for r in results if r[0] is not None)
                differ = sum(r[0] is not None and r[0] != expected[r[2]] for r in results)
                rows_seen = _most_rows(port)
                print(
                    f"| {name} | {clients} | {len(results)} | {len(results) / elapsed:.1f} | "
                    f"{ok[len(ok) // 2] * 1000:.0f} | {ok[min(int(0.99 * len(ok)), len(ok) - 1)] * 1000:.0f} | "
                    f"{rows_seen} | {len(results) - len(ok)} | {differ} |",
                    flush=True,
                )
        finally:
            server.terminate()
            server.wait(timeout=30)


def _beam_request(url: str, prompt: str, tokens: int, width: int):
    start = time.perf_counter()
    body = {"prompt": prompt, "max_new_tokens": tokens, "num_beams": width}
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            text = json.loads(response.read())["samples"][0]
    except (urllib.error.HTTPError, OSError):
        text = None
    return text, time.perf_counter() - start, prompt


def _most_rows(port: int) -> str:
    """The most rows one batched step has held so far, from /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    values = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith("gentext_batch_rows_most{")]
    return f"{float(values[0]):.0f}" if values else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, action="append")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--stream", action="store_true", help="streaming clients, batching vs thread per request")
    parser.add_argument("--weights", default="auto", help="the servers' --weights (fp32, bf16, int8, auto)")
    parser.add_argument("--every-token", action="store_true", help="--stream: add a --stream-interval 0 server")
    parser.add_argument("--workers", type=int, default=1, help="--stream: add a server with this many --workers")
    parser.add_argument("--beams", type=int, default=0, help="beam-search requests of this many beams")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = f"{tmp}/run"
            subprocess.run(
                [sys.executable, "-m", "gentext", "train", "--out", run, "--steps", "150", "--quiet"], check=True
            )
        if args.beams:
            beams(run, args.clients or [1, 16], args.seconds, args.tokens, args.weights, args.beams)
            return
        if args.stream:
            counts = args.clients or [1, 8, 32, 64]
            streaming(run, counts, args.seconds, args.tokens, args.weights, args.every_token, args.workers)
            return
        client_counts = args.clients or [2, 14]
        server, port = start_server(run, "--max-concurrency", "2", "--max-queue", "8")
        base = f"http://127.0.0.1:{port}"
        try:
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
