"""Who may write a run directory, and when a reader sees it whole.

- **The claim**: a training holds an exclusive lock on `RUN/.gentext.lock` from before its first
  write to its end, so two processes never write one run (a second training, or a `--resume` beside
  a running one, is refused with the first one's pid). The kernel drops the lock when its process
  dies, however it dies, so a killed training never leaves a stale claim.
- **A save is one step**: the files a checkpoint writes together (weights, training state, metrics;
  at the end the chain and the config) are written under an exclusive lock on `RUN/.gentext.save`,
  and `checkpoint.load_run` reads under a shared one, so `serve` or `generate` never combine files
  of two different saves. Each file is also replaced atomically on its own (checkpoint.atomic_write).
- **Nothing half made**: a run directory this process created is removed again if the training
  fails before the directory holds weights, so a full disk or an interrupted start leaves no folder
  that looks like a run and does not load.

Locks are advisory `flock`s on files inside the run (hidden, kept): a read-only run directory has
no writer, so readers there skip the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from gentext.errors import GentextError

LOCK = ".gentext.lock"
SAVE_LOCK = ".gentext.save"
HIDDEN = (LOCK, SAVE_LOCK)  # not a run's content: an "empty" directory may hold these


def is_empty(run_dir: Path) -> bool:
    return not run_dir.exists() or all(p.name in HIDDEN for p in run_dir.iterdir())


@contextlib.contextmanager
def claimed(run_dir: Path, weights: str) -> Iterator[None]:
    """Hold the run's claim while the body writes it; a run this call created and left without
    `weights` is removed if the body fails."""
    run_dir = Path(run_dir)
    created = is_empty(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / LOCK, "a+")
    except OSError as exc:
        raise GentextError(f"cannot write {run_dir} ({exc.strerror})") from None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise GentextError(
                f"{run_dir} is being written by {holder}: wait for it to finish, or choose another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"gentext pid {os.getpid()}")
        handle.flush()
        try:
            yield
        except BaseException:
            if created and not (run_dir / weights).exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # nothing loadable was made: no folder left
            raise
    finally:
        handle.close()


@contextlib.contextmanager
def saving(run_dir: Path) -> Iterator[None]:
    """The files of one save, written as one step for readers (`reading`)."""
    with _locked(Path(run_dir) / SAVE_LOCK, fcntl.LOCK_EX, create=True):
        yield


@contextlib.contextmanager
def reading(run_dir: Path) -> Iterator[None]:
    """Read a run's files while no save is under way (a read-only run: no lock needed)."""
    with _locked(Path(run_dir) / SAVE_LOCK, fcntl.LOCK_SH, create=False):
        yield


@contextlib.contextmanager
def _locked(path: Path, mode: int, create: bool) -> Iterator[None]:
    try:
        handle = open(path, "a+" if create else "r")
    except OSError:  # a run that no writer ever saved under a lock, or a read-only one
        if create:
            raise
        yield
        return
    try:
        fcntl.flock(handle, mode)
        yield
    finally:
        handle.close()
