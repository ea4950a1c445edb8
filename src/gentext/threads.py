"""CPU threads: how many, how idle ones wait, and giving cores back when other work needs them.

Why: on a 2-core machine two CPU-heavy processes that each run 2 OpenMP threads fight. A barrier
needs both of a process's threads on a core at once, and a waiting thread spins through its time
slice, so each side ran at 2-20% of its speed alone (measured: `benchmarks/bench_contention.py`).
One thread each runs at ~90% of one thread alone. So:

- `prepare()` runs before torch is imported (the `gentext` command's entry, __main__.py; a library
  user may call it first thing): idle OpenMP workers spin for a short while, then sleep
  (GOMP_SPINCOUNT, KMP_BLOCKTIME), unless the user has set them.
  Passive waiting (OMP_WAIT_POLICY=passive) was measured too: it halved training speed alone.
- The thread count starts from the CPUs this process may use (affinity and cgroup quota), not the
  host's count, less what other processes used in the first moments of this one (one line says
  what was chosen and why). Not the load average, where /proc/stat can tell: a minute's average
  still holds the command that ran just before (a training before `generate`).
- `tick()`, called in the hot loops (training steps, evaluation rows, generation steps), measures
  every few seconds how much of the usable cores other processes take (/proc/stat minus our own
  CPU time) and sets the threads to the cores left, at least one; when the others finish it
  takes the cores back.
- `--threads N` (or OMP_NUM_THREADS) fixes the number: no adapting.

torch keeps the count per OS thread (OpenMP's nthreads ICV), so `tick()` applies the current
choice in whichever thread calls it (a server's worker threads included).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

# libgomp's default spin (300k), and 30k, let a waiting worker burn the time slice another process
# needed; 10k kept the speed alone (RESULTS.md, "Both CPUs and a shared machine").
SPIN_DEFAULTS = {"GOMP_SPINCOUNT": "10000", "KMP_BLOCKTIME": "1"}
FIXING_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
RECHECK_SECONDS = 2.0
FIRST_LOOK_SECONDS = 0.3  # the shortest window the starting count is chosen on
# Generation steps of fewer rows run on one thread: a one-row product gains little from a second
# thread, and a barrier that waits for a thread the OS gave to an event loop or a client costs
# milliseconds, which made a server's one stream several times slower (RESULTS.md, "Small steps").
PARALLEL_ROWS = 8
# In a server the event loop and the clients want the second core too: a step of 8-15 rows on two
# OpenMP threads there ran at two thirds of one thread's tokens/s (RESULTS.md, "The serving process").
SERVING_PARALLEL_ROWS = 16


_start: tuple | None = None  # the first look at the machine, taken before torch loads


def prepare() -> None:
    """Set OpenMP's idle waiting before torch loads it (a no-op for what the user set), and take a
    first look at the CPUs, so `configure` can tell what others used while torch was loading."""
    global _start
    for name, value in SPIN_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if _start is None:
        _start = (time.monotonic(), _busy_jiffies(_affinity()), _own_cpu_seconds())


def _cgroup_cpus() -> float | None:
    """The cgroup's CPU quota in cores (v2 cpu.max or v1 cfs files), None when unlimited."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError):
        return None


def _affinity() -> set[int]:
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return set(range(os.cpu_count() or 1))


def usable_cpus() -> int:
    """The cores this process may use: its affinity mask, capped by a cgroup quota."""
    count = len(_affinity())
    quota = _cgroup_cpus()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota - 0.01)))
    return max(1, count)


def _busy_jiffies(cpus: set[int]) -> tuple[int, int] | None:
    """(busy, total) jiffies of these CPUs since boot, from /proc/stat."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    busy = total = 0
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]
        idle = values[3] + values[4]  # idle + iowait
        total += sum(values)
        busy += sum(values) - idle
    return (busy, total) if total else None


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


class Governor:
    """The thread count this process should use now; see the module docstring."""

    def __init__(self, fixed: int | None = None):
        self.usable = usable_cpus()
        self.fixed = fixed
        self.target = fixed or self.usable
        self.helper = True  # small steps may take a second core (`spare_core`)
        self.parallel_rows = PARALLEL_ROWS  # generation steps of fewer rows run on one thread
        self.local = threading.local()
        self.lock = threading.Lock()
        self.cpus = _affinity()
        self.hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self.pending: str | None = None  # the busy-at-start line, said once when work begins
        self.undecided = False  # the starting count is chosen at the first tick (`configure`)
        self.last = _start or (time.monotonic(), _busy_jiffies(self.cpus), _own_cpu_seconds())

    def others(self) -> float | None:
        """Cores other processes used since the last look (None when /proc/stat is not there)."""
        now, jiffies, own = time.monotonic(), _busy_jiffies(self.cpus), _own_cpu_seconds()
        before, self.last = self.last, (now, jiffies, own)
        if jiffies is None or before[1] is None or now - before[0] <= 0:
            return None
        busy = (jiffies[0] - before[1][0]) / self.hz
        return max(0.0, busy - (own - before[2])) / (now - before[0])

    def choose(self, others: float) -> int:
        """Cores left by the others (rounded: 0.6 of a core counts as taken), at least one."""
        return max(1, min(self.usable, self.usable - int(others + 0.4)))

    def start(self) -> None:
        """The count to start from: the cores left by what others used since the first look (the
        load average where /proc/stat cannot tell); a line for the user where that is fewer than all."""
        others = self.others()
        if others is None:
            others = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
        self.target = self.choose(others)
        if self.target < self.usable:  # said at the first hot-loop tick: a command refused first says nothing
            self.pending = (
                f"other processes are using {others:.1f} of the {self.usable} usable cores: starting with "
                f"{self.target} thread{'' if self.target == 1 else 's'} and taking cores back as they free up "
                "(--threads N fixes the number)"
            )

    def tick(self, rows: int | None = None) -> None:
        """Re-measure every few seconds (adapting governors only); apply the count in this thread
        (one thread for a generation step of fewer than PARALLEL_ROWS rows, unless fixed)."""
        due = FIRST_LOOK_SECONDS if self.undecided else RECHECK_SECONDS
        if self.fixed is None and time.monotonic() - self.last[0] >= due and self.lock.acquire(False):
            try:
                if self.undecided:
                    self.undecided = False
                    self.start()
                else:
                    others = self.others()
                    if others is not None:
                        self.target = self.choose(others)
            finally:
                self.lock.release()
        if self.pending:
            log.warning(self.pending)
            self.pending = None
        self.apply(1 if self.fixed is None and rows is not None and rows < self.parallel_rows else self.target)

    def apply(self, target: int | None = None) -> None:
        """Set this OS thread's torch thread count to `target` (default: the current choice; torch
        keeps it per thread)."""
        target = target or self.target
        if getattr(self.local, "applied", None) != target:
            import torch

            torch.set_num_threads(target)
            self.local.applied = target


_governor: Governor | None = None


def configure(threads: int | None = None) -> Governor:
    """Choose the thread count for this process: `threads` (--threads) fixes it, then OMP_NUM_THREADS,
    else start from the usable cores less what other processes took since gentext was first
    imported (`prepare`), and adapt. Where that window is still too short to tell (a command that
    has only read its flags), all usable cores until the first tick FIRST_LOOK_SECONDS after it
    chooses. Once per process unless `threads` is given, so the busy line is said once."""
    global _governor
    if threads is not None and threads < 1:
        from gentext.errors import GentextError

        raise GentextError(f"--threads must be at least 1, got {threads}")
    if _governor is not None and threads is None:
        _governor.apply()
        return _governor
    env = next((os.environ[v] for v in FIXING_VARIABLES if os.environ.get(v, "").isdigit()), None)
    fixed = threads or (int(env) if env and int(env) > 0 else None)
    governor = Governor(fixed)
    if fixed is None:
        window = time.monotonic() - governor.last[0]
        if window < FIRST_LOOK_SECONDS and governor.last[1] is not None:
            governor.undecided = True
        else:
            governor.start()
    _governor = governor
    governor.apply()
    return governor


def tick(rows: int | None = None) -> None:
    """Called in hot loops: adapt to other processes (a few microseconds between re-measurements);
    generation passes its step's `rows`."""
    if _governor is not None:
        _governor.tick(rows)


def spare_core(rows: int) -> bool:
    """Whether a generation step of `rows` rows may hand half of each product to a second core
    (the compiled kernels' helper): only where `tick(rows)` put this thread on one (a step that
    already runs two OpenMP threads beside the helper ran three times slower), while the governor,
    adapting, has that core to give, and not in a server (`serving`); a fixed count is the user's."""
    if not may_split():
        return False
    governor = _governor
    return rows < governor.parallel_rows and governor.target >= 2 and getattr(governor.local, "applied", None) == 1


def may_split() -> bool:
    """Whether any step of this process may take the spare core (`spare_core`): what packing an
    int8 product's weights a second time, in two halves, is for. A server (`serving`), a fixed
    thread count or a single usable core never splits, so it never packs them."""
    governor = _governor
    return governor is not None and governor.fixed is None and governor.helper and governor.usable >= 2


def serving() -> None:
    """This process serves HTTP: its event loop needs the second core between a stream's tokens.
    A helper spinning on it doubled one stream's inter-token p99 and sent no more tokens, and
    steps of up to 15 rows ran slower on two threads (RESULTS.md), so small steps keep to one core."""
    governor = configure()
    governor.helper, governor.parallel_rows = False, SERVING_PARALLEL_ROWS


def describe() -> dict:
    """What `gentext doctor` and bug reports show."""
    governor = _governor or Governor()
    return {
        "usable_cpus": governor.usable,
        "threads": governor.target,
        "fixed": governor.fixed is not None,
        "second_core": governor.fixed is None and governor.usable >= 2,  # for small steps (`spare_core`)
        "cgroup_quota": _cgroup_cpus(),
        "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
