"""Hostile requests interleaved with good streams, against `gentext serve` on 127.0.0.1.

    python benchmarks/hostile_load.py RUN                   # 32 good streams, ~600 hostile requests
    python benchmarks/hostile_load.py RUN --streams 4 --rounds 2     # seconds (the test suite's size)

While `--streams` clients each stream one generation (seeded, `--tokens` long), other threads send
`--rounds` rounds of every hostile request below (each kind several times) and a poller asks
/healthz every 50 ms. Printed: per hostile kind, the statuses and the slowest answer (asked: a 4xx
within 1 s, never a 5xx); the good streams that completed, and how many differ from the same
request sent alone afterwards (asked: 0); /healthz answers that were not 200 (asked: 0).
Traffic goes to 127.0.0.1 only, bounded in count and time.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import start_server, stream_once  # noqa: E402


def _bomb() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (20_000, 20_000)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def hostile_requests() -> dict[str, tuple[str, bytes]]:
    """kind -> (path, body): each must be refused with a 4xx."""
    good = {"prompt": "The ", "max_new_tokens": 8}

    def body(**fields) -> bytes:
        return json.dumps({**good, **fields}).encode()

    def raw(**fields) -> bytes:
        return json.dumps(fields).encode()

    return {
        "seed 2**64": ("/v1/generate", body(seed=2**64)),
        "negative seed": ("/v1/generate", body(seed=-5)),
        "1000 beams": ("/v1/generate", body(num_beams=1000)),
        "length_penalty 1e308": ("/v1/generate", body(num_beams=2, length_penalty=1e308)),
        "100 stop strings": ("/v1/generate", body(stop=["x"] * 100)),
        "10k-char stop string": ("/v1/generate", body(stop=["y" * 10_000])),
        "temperature 1e300": ("/v1/generate", body(temperature=1e300)),
        "max_time Infinity": ("/v1/generate", body(max_time=float("inf"))),
        "top_k 1e30": ("/v1/generate", body(top_k=10**30)),
        "huge prompt": ("/v1/generate", body(prompt="T" * 50_000)),
        "unknown field": ("/v1/generate", body(temprature=0.5)),
        "not JSON": ("/v1/generate", b"{prompt: The"),
        "unknown model": ("/v1/generate", body(model="nope")),
        "unknown characters": ("/v1/generate", body(prompt="\u2603\u2603")),
        "20 MB body": ("/v1/generate", b'{"prompt": "' + b"a" * 20_000_000 + b'"}'),
        "decompression bomb": ("/v1/caption", json.dumps({"image": _bomb()}).encode()),
        "score: empty text": ("/v1/score", raw(text="")),
        "completions: presence_penalty 1e9": ("/v1/completions", raw(prompt="The ", presence_penalty=1e9)),
        "completions: n 10^6": ("/v1/completions", raw(prompt="The ", n=10**6)),
        "completions: logprobs 1000": ("/v1/completions", raw(prompt="The ", logprobs=1000)),
        "lone surrogate": ("/v1/generate", b'{"prompt": "\\ud800abc"}'),
        "regex of a million states": ("/v1/generate", body(regex="a{1000000}")),
        "regex that does not compile": ("/v1/generate", body(regex="(((")),
        "chat: 10,000 messages": ("/v1/chat/completions", raw(messages=[{"role": "user", "content": "a"}] * 10_000)),
        "chat: unknown role": ("/v1/chat/completions", raw(messages=[{"role": "wizard", "content": "a"}])),
    }  # fmt: skip


def send(base: str, path: str, data: bytes) -> tuple[int, float]:
    """POST and the status. A server may answer (413) before the body is all sent and close: the
    answer is read even when sending the rest failed, as a careful client does."""
    start = time.perf_counter()
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        try:
            connection.request("POST", path, data, {"Content-Type": "application/json"})
        except OSError:
            pass  # the server stopped reading: its answer may be waiting
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - start


def generate(base: str, body: dict) -> str:
    request = urllib.request.Request(base + "/v1/generate", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["samples"][0][len(body["prompt"]) :]  # as stream_once: no prompt


def run(run_dir: str, streams: int, rounds: int, tokens: int) -> dict:
    server, port = start_server(run_dir, "--max-concurrency", str(streams + 8), "--max-queue", "64")
    base = f"http://127.0.0.1:{port}"
    hostile, outcomes, health = hostile_requests(), defaultdict(list), Counter()
    texts: dict[int, str] = {}
    stop = threading.Event()
    try:

        def good(i: int) -> None:
            text, _, _, ok = stream_once(port, {"prompt": "The ", "max_new_tokens": tokens, "seed": i, "stream": True})
            texts[i] = text if ok else None

        def attack(offset: int) -> None:
            for _ in range(rounds):
                for kind, (path, data) in list(hostile.items())[offset::4]:
                    outcomes[kind].append(send(base, path, data))

        def poll() -> None:
            while not stop.is_set():
                health[_health(base)] += 1
                time.sleep(0.05)

        workers = [threading.Thread(target=good, args=(i,)) for i in range(streams)]
        workers += [threading.Thread(target=attack, args=(k,)) for k in range(4)]
        poller = threading.Thread(target=poll)
        poller.start()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        stop.set()
        poller.join()
        alone = {i: generate(base, {"prompt": "The ", "max_new_tokens": tokens, "seed": i}) for i in texts}
    finally:
        server.terminate()
        server.wait(timeout=30)
    differing = sum(texts[i] != alone[i] for i in texts)
    return {"outcomes": outcomes, "health": health, "completed": sum(t is not None for t in texts.values()),
            "differing": differing}  # fmt: skip


def _health(base: str) -> int:
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=8, help="rounds of every hostile kind, from 4 threads")
    parser.add_argument("--tokens", type=int, default=200)
    args = parser.parse_args()
    result = run(args.run, args.streams, args.rounds, args.tokens)
    print(f"{args.streams} good streams of {args.tokens} tokens; {args.rounds} rounds of each hostile request")
    print("| hostile request | sent | statuses | slowest answer s |")
    print("|---|---:|---|---:|")
    for kind, results in result["outcomes"].items():
        statuses = dict(sorted(Counter(status for status, _ in results).items()))
        print(f"| {kind} | {len(results)} | {statuses} | {max(t for _, t in results):.3f} |")
    total = sum(len(r) for r in result["outcomes"].values())
    bad = sum(1 for r in result["outcomes"].values() for status, t in r if not (400 <= status < 500) or t > 1.0)
    print(f"hostile requests: {total}, not a 4xx within 1 s: {bad}")
    print(f"good streams completed: {result['completed']}/{args.streams}, differing from alone: {result['differing']}")
    print(f"/healthz during the load: {dict(result['health'])}")


if __name__ == "__main__":
    main()
