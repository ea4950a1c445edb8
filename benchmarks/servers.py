"""What the serving benchmarks share (load_test.py, bench_apis.py, hostile_load.py): a `gentext
serve` process on a free local port and lm-eval scoring it (the tests' own, tests/servers.py), and
one streamed request read as a client reads it."""

from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository: tests/servers.py
from tests.servers import lm_eval_bits_per_byte  # noqa: E402, F401 -- bench_apis.py's, from here
from tests.servers import start_server as _start  # noqa: E402


def start_server(run: str, *flags: str) -> tuple[subprocess.Popen, int]:
    """`gentext serve RUN` on a free local port (tests/servers.py): the process and its port."""
    server, url = _start(Path(run), *flags)
    return server, int(url.rsplit(":", 1)[1])


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
