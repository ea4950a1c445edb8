"""What the serving benchmarks share (load_test.py, bench_apis.py, hostile_load.py): a `gentext
serve` process on a free local port, and one streamed request read as a client reads it."""

from __future__ import annotations

import http.client
import itertools
import json
import socket
import subprocess
import sys
import time
import urllib.request


def start_server(run: str, *flags: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "gentext", "serve", run, "--port", str(port), *flags]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(150):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return server, port


def stream_once(port: int, body: dict) -> tuple[str, float | None, list[float], bool]:
    """One SSE request: (generated text, seconds to the first generated text, gaps between the
    events that carry text, ok). Events may carry several tokens (the server joins text that piled
    up), and the first text is the prompt's."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    prompt_length = len(body["prompt"])
    try:
        connection.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        if response.status != 200:
            return "", None, [], False
        text, times, event, ok = "", [], "", False
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "token":
                text += json.loads(line[6:])["text"]
                if len(text) > prompt_length:
                    times.append(time.perf_counter())
            elif line.startswith("data: ") and event in ("done", "error"):
                ok = event == "done"
                break
    except OSError:
        return "", None, [], False
    finally:
        connection.close()
    first = times[0] - start if times else None
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return text[prompt_length:], first, gaps, ok
