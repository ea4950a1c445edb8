"""The training loop: truncated BPTT over parallel streams, AdamW (or SGD), clipping, warmup + cosine.

One step:  stop? -> lr -> eval / save -> sample callback -> forward -> finite? -> backward ->
           (unscale) clip / step -> log

Checkpoints: `model.safetensors` holds the best validation weights, `train_state.safetensors`
everything needed to resume bitwise (written every `save_every` steps, at the end, and when a
SIGINT / SIGTERM asks the run to stop). The caller's `on_eval` (which prints a sample) runs only
after that step's checkpoint is written, and an error in it is logged, never fatal.

Precision: the training step runs under autocast (bf16, or fp16 with a `GradScaler`); every
evaluation, like generation and `gentext eval`, runs in float32, so the numbers a run reports are
the ones its users reproduce. The carried state is float32 whatever the autocast.

Data parallel: each rank seeds its own torch RNG (dropout masks differ across ranks' rows); the
draw of which rows start a window cold comes from one generator shared by all ranks, so a run of
N processes takes the same rows cold as one process.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from gentext import checkpoint, threads
from gentext.config import TrainConfig
from gentext.errors import TrainingInterrupted
from gentext.hardware import release_memory
from gentext.training import distributed
from gentext.training.feeds import Feed
from gentext.training.run import Run

logger = logging.getLogger(__name__)

SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
EVAL_EVERY = 200  # steps between validations where --eval-every is not given
EVAL_SHARE = 0.05  # ... and on a time limit, the most of the time that validating may take


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float
    val_loss: float | None
    best_step: int
    tokens_per_second: float
    stopped_early: bool
    val_tokens: int = 0  # tokens the final validation predicted
    eval_seconds: float = 0.0  # the final validation's time (outside --time-limit)
    # A resumed run: steps, tokens and seconds above are the whole run's; these are this session's
    # (tokens_per_second is always this session's rate).
    resumed_at: int | None = None
    session_seconds: float = 0.0


def lr_at(step: int, progress: float, config: TrainConfig) -> float:
    """Learning rate: linear warmup over `warmup_steps`, then cosine from the peak down to
    `min_lr_ratio` of it as `progress` (fraction of the budget: steps, epochs or time) goes 0 -> 1."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = peak * config.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Validations:
    """When the periodic validation is due: every --eval-every steps where it is given; where not,
    every EVAL_EVERY steps, and on a time limit only once the time since the last validation is
    1 / EVAL_SHARE times what that one took. A time limit is what the user gave, and a validation
    reads tens of thousands of tokens in float32: a wide network's validation costs tens of
    training steps, so at every EVAL_EVERY steps it took a large share of the time from training
    (benchmarks/RESULTS.md). Every rank validates when any is due, so they stay in step."""

    def __init__(self, run: Run, clock: Callable[[], float] = time.perf_counter):
        self.run, self.config, self.clock = run, run.config, clock
        self.adapt = self.config.eval_every is None and self.config.time_limit is not None
        self.ended, self.took = clock(), 0.0

    def due(self, step: int) -> bool:
        if step % (self.config.eval_every or EVAL_EVERY):
            return False
        waited = self.clock() - self.ended
        return not self.adapt or distributed.any_rank(waited * EVAL_SHARE >= self.took, self.run.dist, self.run.device)

    def evaluate(self) -> None:
        start = self.clock()
        self.run.evaluate()
        self.ended = self.clock()
        self.took = self.ended - start


@contextlib.contextmanager
def _stop_requests():
    """Turn the first SIGINT/SIGTERM into a request to stop at the next step boundary (so the
    checkpoint is consistent); a second one acts at once."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {}

    def handler(signum, frame):
        received.append(signum)
        signal.signal(signum, previous[signum])

    for sig in SIGNAL_EXIT:
        previous[sig] = signal.signal(sig, handler)
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _safe_callback(on_eval, step: int, val: float | None) -> None:
    """A training-time sample is a courtesy: whatever goes wrong in it, training goes on."""
    try:
        on_eval(step, val)
    except Exception as exc:  # noqa: BLE001 -- by design: nothing in a callback may end the run
        name = type(exc).__name__
        logger.warning("the evaluation callback failed at step %d (%s: %s); training continues", step, name, exc)


def train(
    model: nn.Module,
    make_feed: Callable[[range], Feed],
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    on_eval: Callable[[int, float | None], None] | None = None,
    progress: bool = True,
    resume: bool = False,
) -> TrainResult:
    """Train `model` in place on the feed `make_feed(rows)` makes for this process's rows
    (training/feeds.py: windows of a stream, or pairs), writing checkpoints to `run_dir` (rank 0
    only under torchrun). Every kind but the counted ones trains here."""
    run = Run(model, make_feed, config.with_default_stop(), run_dir, device)
    if resume:
        run.resume()
    elif run.main:
        checkpoint.save_weights(run_dir, model)  # so the run directory loads from the first moment
    if not resume:
        run.save(0.0)
    bar = tqdm(
        total=run.budget.total_steps,
        initial=run.prog.step,
        disable=not (progress and run.main),
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )
    resumed_at, elapsed_before = (run.prog.step if resume else None), run.prog.elapsed
    try:
        stopped_early, seconds = _loop(run, bar, on_eval)
        release_memory()  # the steps' freed activations: the final evaluation should not add to them
        eval_start = time.perf_counter()
        final_val, val_count = run.final_evaluation()
        eval_seconds = time.perf_counter() - eval_start
    finally:
        bar.close()
        run.close()
    prog = run.prog
    return TrainResult(
        steps=prog.step,
        tokens=prog.tokens,
        seconds=elapsed_before + seconds,
        train_loss=sum(run.recent) / len(run.recent) if run.recent else math.nan,
        val_loss=final_val,
        best_step=prog.best_step,
        tokens_per_second=(prog.tokens - run.tokens_at_start) / max(seconds, 1e-9),
        stopped_early=stopped_early,
        val_tokens=val_count,
        eval_seconds=eval_seconds,
        resumed_at=resumed_at,
        session_seconds=seconds,
    )


def _loop(run: Run, bar, on_eval) -> tuple[bool, float]:
    """Steps until the budget, patience or a signal ends the run; returns (stopped early, seconds)."""
    prog, config = run.prog, run.config
    resumed_at, elapsed_before = prog.step, prog.elapsed
    start = time.perf_counter()
    stopped_early, validations = False, _Validations(run)
    with _stop_requests() as signals:
        while True:
            elapsed = elapsed_before + time.perf_counter() - start
            fraction = run.budget.progress(prog.step, elapsed)
            if distributed.any_rank(fraction >= 1.0 or bool(signals), run.dist, run.device):
                break
            lr = lr_at(prog.step, fraction, config) * prog.lr_scale
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            if prog.step > resumed_at and validations.due(prog.step):
                validations.evaluate()
            if prog.step > resumed_at and prog.step % config.save_every == 0:
                run.save(elapsed)
            if run.last_eval_step == prog.step and on_eval is not None and run.main:
                _safe_callback(on_eval, prog.step, run.last_val)  # after the checkpoint of this step
            if run.last_eval_step == prog.step and config.patience and prog.evals_since_best >= config.patience:
                stopped_early = True
                break
            threads.tick()
            loss = run.step(lr)
            if loss is None:
                continue
            rate = (prog.tokens - run.tokens_at_start) / max(time.perf_counter() - start, 1e-9)
            run.log(loss, lr, rate)
            _show(bar, run, rate, elapsed)
        elapsed = elapsed_before + time.perf_counter() - start
        if signals:
            run.save(elapsed)
            sig = signal.Signals(signals[0])
            raise TrainingInterrupted(
                f"{sig.name} at step {prog.step}: checkpoint saved in {run.run_dir}; "
                f"continue with: gentext train --out {run.run_dir} --resume",
                SIGNAL_EXIT.get(sig, 130),
            )
        final_eval = run.last_eval_step != prog.step  # not when patience stopped right after one
        if final_eval:
            run.evaluate()
        run.save(elapsed)
        if final_eval and on_eval is not None and run.main:
            _safe_callback(on_eval, prog.step, run.last_val)
    return stopped_early, time.perf_counter() - start


def _show(bar, run: Run, rate: float, elapsed: float) -> None:
    postfix = {"loss": f"{sum(run.recent) / len(run.recent):.3f}", "tok/s": f"{rate:,.0f}"}
    if run.last_val is not None:
        postfix["val"] = f"{run.last_val:.3f}"
    if run.config.time_limit and not run.budget.total_steps:
        postfix["left"] = f"{max(run.config.time_limit - elapsed, 0):.0f}s"
    bar.set_postfix(postfix, refresh=False)
    bar.update(1)
