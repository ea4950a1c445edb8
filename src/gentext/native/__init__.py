"""Optional compiled kernels for the per-token path (kernels.cpp), with the Python path as fallback.

One generated token of a small recurrent model is a few dozen tensor operations around two matrix
products, and from Python each operation costs more than its arithmetic. `kernels.cpp` makes the
same ATen calls in C++ (the recurrent step, one row's plain draw, and a lone row's run of draws and
steps without Python between them), with plain loops where they round as the operations do (an
LSTM cell's products and sums, a draw's running sum), so the numbers are identical and only the
interpreter's and the dispatcher's share goes. It is built with `torch.utils.cpp_extension` where a C++
compiler and ninja exist, once per (source, torch, Python) into `$GENTEXT_CACHE/native/KEY/`, and
loaded from there by every later process.

GENTEXT_NATIVE chooses:
- `auto` (default): load the built kernels if they are there; else `prepare()` (called when a run
  is loaded to generate) starts the build in a background process at the lowest CPU priority and
  the Python path runs meanwhile; the kernels are taken up as soon as the build lands.
- `wait`: `prepare()` builds in the foreground (benchmarks, tests).
- `off` (or `0`): never; the Python path alone.
A failed build is recorded beside the cache entry (`failed.log`) and not retried until that file is
deleted; `gentext doctor` says which path runs and why.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from gentext import threads
from gentext.paths import cache_dir

logger = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("kernels.cpp")
# No fused multiply-add: the loops between the step's activations round as the tensor operations do
CFLAGS = ["-O2", "-ffp-contract=off"]
POLL_SECONDS = 2.0  # how often a pending background build is checked for


class _Loader:
    def __init__(self):
        self.module = None
        self.builder: subprocess.Popen | None = None
        self.next_poll = 0.0
        self.reason = "not asked for yet"


_LOADER = _Loader()


def mode() -> str:
    value = os.environ.get("GENTEXT_NATIVE", "auto").strip().lower()
    return "off" if value in ("0", "off", "no", "false") else value if value in ("auto", "wait") else "auto"


def entry(source: Path | None = None) -> Path:
    """Where the module built from `source` (default: kernels.cpp) lives: a key of what it depends
    on (its source and the headers beside it, the compiler flags, torch's version and ABI, Python, the machine)."""
    source = source or SOURCE
    headers = [h.read_bytes() for h in sorted(source.parent.glob("*.h"))]  # what the source includes
    machine = [torch.__version__.encode(), sys.version.encode(), platform.machine().encode()]
    parts = [source.read_bytes(), *headers, *machine, " ".join(flags()).encode()]
    return cache_dir() / "native" / hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


@functools.cache
def openmp() -> list[str]:
    """-fopenmp where torch runs its own threads on OpenMP under Linux (pip's torch, whose libgomp is
    loaded first and then serves the kernels too): the kernels' at::parallel_for splits a batch's
    cell and copies between torch's threads. Elsewhere those loops run on one thread, to the same numbers."""
    backend = "parallel backend: OpenMP" in torch.__config__.parallel_info()
    return ["-fopenmp"] if backend and sys.platform.startswith("linux") else []


def flags() -> list[str]:
    """The compiler's flags (part of the cache key)."""
    return CFLAGS + openmp()


def kernels():
    """The compiled module, or None (the Python path runs). Cheap: called once or twice a token."""
    loader = _LOADER
    if loader.module is None and loader.builder is not None and time.monotonic() >= loader.next_poll:
        loader.next_poll = time.monotonic() + POLL_SECONDS
        if loader.builder.poll() is not None:
            loader.builder = None
            _load()
    return loader.module


def run_ahead(made, logits, state, count: int, sampler, generator, end_id, read_last: bool):
    """A request's rows drawn and read up to `count` tokens in one call of the loaded kernels: a lone
    row by `run_plain` (its ids as a list), a batch by `run_rows` (ids (count, B)). `made` is a
    kind's `run_step()`: its compiled step and how its state is made from what the step carries
    (h[, c]), or None where it has none. -> (ids, logits (B, V), state), or None."""
    if made is None:
        return None
    step, state_of = made
    module = kernels()
    run = module.run_plain if logits.shape[0] == 1 else module.run_rows
    h, c, split = state.tensors["h"], state.tensors.get("c"), threads.spare_core(logits.shape[0])
    end = -1 if end_id is None else end_id
    ids, logits, *hc = run(
        step, logits, h, c, count, sampler.temperature, sampler.suppress, generator, end, read_last, split
    )
    return ids, logits, state_of(*hc)


def status() -> str:
    """One line for `gentext doctor`: which path runs and why."""
    if kernels() is not None:
        return f"compiled ({entry()})"
    return f"Python ({_LOADER.reason})"


def prepare(wait: bool | None = None, build_now: bool = True) -> None:
    """Make the kernels available: load them if built; else build them in the background (or, with
    `wait` or GENTEXT_NATIVE=wait, now; not at all without `build_now`). Never raises: any failure
    leaves the Python path."""
    chosen = mode()
    if chosen == "off":
        _LOADER.reason = "GENTEXT_NATIVE=off"
        return
    if _LOADER.module is not None or _load() or _failed():
        return
    missing = _missing_tools()
    if missing:
        _LOADER.reason = f"no {missing} to build the compiled kernels"
        return
    if not build_now:
        return
    if wait or (wait is None and chosen == "wait"):
        _start_builder(nice=False).wait()  # in a process of its own: this one imports only the result
        _load() or _failed()
    elif _LOADER.builder is None:
        _LOADER.reason = "being built in the background"
        _LOADER.builder = _start_builder()


def _start_builder(nice: bool = True) -> subprocess.Popen:
    """`python -m gentext.native` (at the lowest priority, in a session of its own so that it
    finishes and caches its work even when the command that started it has ended)."""
    return subprocess.Popen(
        [sys.executable, "-m", "gentext.native", str(SOURCE)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=nice, preexec_fn=(lambda: os.nice(19)) if nice else None,
    )  # fmt: skip


def _failed() -> bool:
    log = entry() / "failed.log"
    if log.exists():
        _LOADER.reason = f"the build failed; see {log} (delete it to retry)"
    return log.exists()


def _missing_tools() -> str | None:
    from torch.utils import cpp_extension

    if shutil.which(os.environ.get("CXX", "c++")) is None and shutil.which("g++") is None:
        return "C++ compiler"
    return None if cpp_extension.is_ninja_available() else "ninja"


def _load() -> bool:
    built = sorted(entry().glob("*.so"))
    if not built:
        _LOADER.reason = "not built yet"
        return False
    try:
        spec = importlib.util.spec_from_file_location(built[0].stem, built[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 -- a damaged build: dropped, so the next prepare builds it again
        _LOADER.reason = f"the built module would not load ({type(exc).__name__}); removed, to be built again"
        logger.warning("the compiled kernels in %s would not load (%s); removed, to be built again", entry(), exc)
        shutil.rmtree(entry(), ignore_errors=True)
        return False
    _LOADER.module, _LOADER.reason = module, "loaded"
    return True


def build(source: Path | None = None) -> Path | None:
    """Compile `source` (kernels.cpp) into its cache entry (atomically: a temporary folder renamed
    into place; one build at a time through a lock file). Returns the entry, or None if it failed."""
    import fcntl

    from torch.utils import cpp_extension

    source = source or SOURCE
    target = entry(source)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the entry built
        if any(target.glob("*.so")):
            return target
        work = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        try:
            name = f"gentext_kernels_{target.name}"
            cpp_extension.load(
                name, [str(source)], extra_cflags=flags(), extra_ldflags=openmp(), build_directory=str(work),
                verbose=False,
            )  # fmt: skip
            kept = work / "kept"
            kept.mkdir()
            shutil.move(str(work / f"{name}.so"), kept / f"{name}.so")
            if target.exists():
                shutil.rmtree(target)
            os.replace(kept, target)
            return target
        except Exception as exc:  # noqa: BLE001 -- recorded; the Python path runs
            target.mkdir(exist_ok=True)
            (target / "failed.log").write_text(f"{type(exc).__name__}: {exc}\n", encoding="utf-8")
            logger.info("building the compiled kernels failed: %s", exc)
            return None
        finally:
            shutil.rmtree(work, ignore_errors=True)


def use(module) -> None:
    """Set the module the hot paths take (None: the Python path) — for tests comparing the two."""
    _LOADER.module = module
