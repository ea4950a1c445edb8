"""`gentext serve` in a process of its own on a free 127.0.0.1 port, for the tests that talk to it
over HTTP."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_server(run: Path, *flags: str, stderr=subprocess.DEVNULL, wait: float = 30.0):
    """`gentext serve RUN` on a free 127.0.0.1 port: (the process, its base URL) once /healthz
    answers (or `wait` seconds passed); the caller stops it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "gentext", "serve", str(run), "--port", str(port), *flags]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    for _ in range(int(wait / 0.2)):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return proc, url


@contextlib.contextmanager
def running_server(run: Path, *flags: str):
    """`gentext serve RUN` on a free 127.0.0.1 port; yields its base URL once /healthz answers."""
    proc, url = start_server(run, *flags)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
