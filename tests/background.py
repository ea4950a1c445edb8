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

import subprocess
import threading
import time
from concurrent.futures import Future


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
