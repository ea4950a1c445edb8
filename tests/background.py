"""Slow commands the suite runs one after another in the background (the README quickstart, the
heaviest benchmark scripts), so they overlap the other tests without crowding two cores.

A test asks for one with `@pytest.mark.background("key")` and reads its `(returncode, stdout,
stderr)` with `background.result("key")` (the `background` fixture). conftest.py starts the
commands the selected tests name as soon as collection ends and moves those tests to the end.
Started all at once, four benchmark scripts, a fresh `pip install` and the suite's own process
oversubscribed the two cores and slowed everything for minutes (OpenMP workers spinning on
each other); one at a time they cost about what their sum costs, beside the suite instead of after it.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import Future
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Background:
    def __init__(self, jobs: dict[str, tuple[list[str], dict] | None]):
        """jobs: key -> (argv, Popen keyword arguments), or None for a job that cannot run here."""
        self.results: dict[str, Future] = {key: Future() for key in jobs}
        self.seconds: dict[str, float] = {}  # each job's wall time, for the suite's summary (CI's budget)
        self._proc: subprocess.Popen | None = None
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(jobs,), daemon=True)
        self._thread.start()

    def _run(self, jobs) -> None:
        for key, job in jobs.items():
            future = self.results[key]
            if job is None or self._stopped.is_set():
                future.set_result(None)
                continue
            command, kwargs = job
            start = time.perf_counter()
            try:
                self._proc = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
                )
                out, err = self._proc.communicate()
                self.seconds[key] = time.perf_counter() - start
                future.set_result((self._proc.returncode, out, err))
            except Exception as exc:  # handed to the test that reads this job
                future.set_exception(exc)

    def result(self, key: str, timeout: float = 850) -> tuple[int, str, str] | None:
        """The job's (returncode, stdout, stderr) once it has run; None where it could not run here."""
        return self.results[key].result(timeout=timeout)

    def stop(self) -> None:
        self._stopped.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self._thread.join(timeout=30)


# The slowest scripts (mostly process start-up and imports) run one after another beside the rest of
# the suite (tests/background.py); the tests that read them run last. A script's table format is
# what they check, never its timings.
HEAVY = {
    "gpu_check": ("gpu_check.py", "--device", "cpu", "--precisions", "fp32", "--tiny", "--models", "char-lstm"),
    "contention": ("bench_contention.py", "--tiny"),
    "pretrained": ("bench_pretrained.py", "--tiny"),
    "quality": ("bench_quality.py", "--tiny"),
    "bigcorpus": ("bench_bigcorpus.py", "--mb", "0.5", "--steps", "3"),
    "families": ("bench_families.py", "--tiny", "--corpora", "tinyshakespeare"),
    "speed": ("bench_speed.py", "--tiny"),
    "int8": ("bench_int8.py", "--tiny"),
    "apis": ("bench_apis.py", "--tiny"),
}


def heavy_job(key: str) -> tuple[list[str], dict] | None:
    """The background job of HEAVY[key]: its command, or None where it cannot run here."""
    import importlib.util

    if key == "pretrained" and importlib.util.find_spec("transformers") is None:
        return None
    name, *args = HEAVY[key]
    return [sys.executable, str(ROOT / "benchmarks" / name), *args], {}


def quickstart_job(where: Path) -> tuple[list[str], dict]:
    """The README's first command, as written but for a 10-second training budget (the suite's
    time, not the command's, is what that changes), to run in a fresh copy of the repository at
    `where` (a background job, tests/background.py: its fresh `pip install` is mostly unpacking
    wheels on one core, which overlaps the rest of the suite instead of adding to it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quickstart.*?```bash\n(.*?)\n```", readme, re.S).group(1)
    assert "--time-limit 3m" in block
    block = block.replace("--time-limit 3m", "--time-limit 10s")
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in files.split():
        (where / name).parent.mkdir(parents=True, exist_ok=True)
        (where / name).write_bytes((ROOT / name).read_bytes())
    env = {**os.environ, "GENTEXT_CACHE": str(where / ".gentext-cache")}  # never the user's ~/.cache
    return ["bash", "-c", block], {"cwd": where, "env": env}
