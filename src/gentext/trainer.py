"""The training loop: truncated BPTT over parallel streams, AdamW (or SGD), clipping, warmup + cosine.

One step:  stop? -> lr -> eval / save -> forward -> finite? -> backward -> clip / step -> log

Checkpoints: `model.safetensors` holds the best validation weights, `train_state.safetensors`
everything needed to resume bitwise (written every `save_every` steps, at the end, and when a
SIGINT / SIGTERM asks the run to stop).
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint, distributed
from .config import TrainConfig
from .dataset import BPTTBatches, content_hash
from .errors import GentextError
from .evaluation import evaluate
from .hardware import autocast, resolve_precision
from .models import map_state
from .records import Recorder, truncate_metrics
from .train_state import Progress, load_train_state, save_train_state

MAX_BAD_STEPS = 5  # consecutive non-finite losses before the run gives up
# The final report evaluates the whole validation text up to this many tokens (a 10% split of a
# multi-GB corpus would take hours); PTB, WikiText and Tiny Shakespeare are far below it.
FINAL_EVAL_TOKENS = 2_000_000
SIGNAL_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


class TrainingInterrupted(GentextError):
    """Raised after a SIGINT/SIGTERM once the checkpoint is safely written."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


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


def lr_at(step: int, progress: float, config: TrainConfig) -> float:
    """Learning rate: linear warmup over `warmup_steps`, then cosine from the peak down to
    `min_lr_ratio` of it as `progress` (fraction of the budget: steps, epochs or time) goes 0 -> 1."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = peak * config.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only: decaying biases and gains pulls them to zero for no benefit.
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        # Plain SGD at a high rate with tight clipping (Zaremba et al. 2014; pytorch/examples'
        # word_language_model: lr 20, clip 0.25) fits word-level LSTMs faster than Adam, whose
        # per-coordinate steps are noisy on the rarely seen rows of a big embedding.
        groups = _param_groups(model, config.weight_decay or 0.0)
        return torch.optim.SGD(groups, lr=config.learning_rate)
    groups = _param_groups(model, 0.01 if config.weight_decay is None else config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.99), fused=device.type == "cuda")


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


def train(
    model: nn.Module,
    train_ids: np.ndarray,
    val_ids: np.ndarray | None,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    on_eval: Callable[[int, float | None], None] | None = None,
    progress: bool = True,
    resume: bool = False,
    data_hash: str | None = None,
) -> TrainResult:
    """Train `model` in place, writing checkpoints to `run_dir` (rank 0 only under torchrun)."""
    config = config.with_default_stop()
    dist_info = distributed.from_env()
    device = distributed.setup(dist_info, device)
    main = dist_info.is_main
    batches = BPTTBatches(
        train_ids, config.batch_size, config.seq_len, rows=distributed.row_range(config.batch_size, dist_info)
    )
    has_val = val_ids is not None and len(val_ids) >= 2
    dtype = resolve_precision(config.precision, device)
    model.to(device).train()
    optimizer = _optimizer(model, config, device)
    net = nn.parallel.DistributedDataParallel(model) if dist_info.enabled else model
    total_steps = config.steps
    if config.epochs is not None:
        epoch_steps = math.ceil(config.epochs * batches.num_windows)
        total_steps = epoch_steps if total_steps is None else min(total_steps, epoch_steps)

    state = None
    data_hash = data_hash or content_hash(train_ids)  # the token cache's key, when the caller has one
    if resume:
        prog, full_state = load_train_state(run_dir, model, optimizer, device)
        if prog.data_hash != data_hash:
            raise GentextError(
                f"{run_dir}: the training text differs from the one this run started with; cannot resume"
            )
        rows = batches.rows
        state = map_state(full_state, lambda t: t[:, rows.start : rows.stop].contiguous())
        if main:
            truncate_metrics(run_dir, prog.step)
    else:
        prog = Progress(data_hash=data_hash)
    resumed_at = prog.step
    elapsed_before = prog.elapsed  # training seconds spent before this process, for --time-limit
    last_eval_step = -1
    recorder = Recorder(run_dir, tensorboard=config.tensorboard) if main else None
    recent: deque[float] = deque(maxlen=20)  # train loss is reported as the mean of the last 20 steps
    last_val = None
    bad_steps = 0
    start = time.perf_counter()
    tokens_at_start = prog.tokens
    bar = tqdm(
        total=total_steps,
        initial=prog.step,
        disable=not (progress and main),
        unit="step",
        dynamic_ncols=True,
        leave=False,
    )

    def save_state() -> None:
        full = map_state(state, lambda t: distributed.gather_rows(t, dist_info))
        prog.elapsed = elapsed_before + time.perf_counter() - start
        if main:
            save_train_state(run_dir, model, optimizer, prog, full)

    def run_eval() -> None:
        # Periodic evaluations read the same first `eval_tokens` validation tokens, so they are
        # comparable with each other and cheap; the final report uses the whole validation text.
        nonlocal last_val, last_eval_step
        last_eval_step = prog.step
        if has_val:
            nats, count = evaluate(model, val_ids, config.seq_len, device, config.batch_size, dtype, config.eval_tokens)
            last_val = nats / count
            if main:
                recorder.evaluation({"step": prog.step, "tokens": prog.tokens, "val_loss": last_val})
        if not has_val or prog.best_val is None or last_val < prog.best_val:
            prog.best_val, prog.best_step, prog.evals_since_best = last_val, prog.step, 0
            if main:
                checkpoint.save_weights(run_dir, model)
        else:
            prog.evals_since_best += 1
        if on_eval is not None and main:
            on_eval(prog.step, last_val)

    if not resume:
        if main:
            checkpoint.save_weights(run_dir, model)  # so the run directory loads from the first moment
        save_state()

    stopped_early = False
    try:
        with _stop_requests() as signals:
            while True:
                elapsed = elapsed_before + time.perf_counter() - start
                budget = [prog.step / total_steps if total_steps else 0.0]
                if config.time_limit:
                    budget.append(elapsed / config.time_limit)
                progress_frac = max(budget)
                if distributed.any_rank(progress_frac >= 1.0 or bool(signals), dist_info, device):
                    break
                lr = lr_at(prog.step, progress_frac, config) * prog.lr_scale
                for group in optimizer.param_groups:
                    group["lr"] = lr
                if prog.step > resumed_at and prog.step % config.eval_every == 0:
                    run_eval()
                    if config.patience and prog.evals_since_best >= config.patience:
                        stopped_early = True
                        break
                if prog.step > resumed_at and prog.step % config.save_every == 0:
                    save_state()

                k = prog.step % batches.num_windows
                if k == 0:
                    state = None  # the data wrapped: rows restart, so their old context is meaningless
                x, y = (t.to(device, non_blocking=True) for t in batches.window(k))
                state = map_state(state, torch.Tensor.detach)  # truncated BPTT: no gradient into the past
                if config.state_reset > 0 and state is not None:
                    # Generation starts from a zero state; a model that only ever saw carried state
                    # writes garbage for hundreds of characters from one. So some rows start cold.
                    # Drawn for the global batch, then sliced: DDP ranks match one process exactly.
                    keep = (torch.rand(config.batch_size) >= config.state_reset)[batches.rows.start : batches.rows.stop]
                    keep = keep.to(device=device, dtype=torch.float32)[None, :, None]  # (1, rows, 1)
                    state = map_state(state, lambda t, keep=keep: t * keep.to(t.dtype))
                with autocast(device, dtype):
                    target_logp, new_state = net(x, state, targets=y)  # (B, T)
                loss = -target_logp.float().mean()
                loss_value = distributed.mean(loss, dist_info)  # the global batch's loss on every rank
                if not math.isfinite(loss_value):
                    bad_steps += 1
                    prog.lr_scale *= 0.5
                    if bad_steps >= MAX_BAD_STEPS:
                        raise GentextError(
                            f"the loss was not finite for {bad_steps} steps in a row; stopped. The last good "
                            f"checkpoint (step {prog.best_step}) is in {run_dir}; try a lower --lr"
                        )
                    bar.write(f"warning: non-finite loss at step {prog.step}; step skipped, learning rate halved")
                    prog.step += 1
                    continue
                bad_steps = 0
                state = new_state
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()

                prog.step += 1
                prog.tokens += batches.tokens_per_window
                recent.append(loss_value)
                rate = (prog.tokens - tokens_at_start) / max(time.perf_counter() - start, 1e-9)
                if main and (prog.step % 10 == 0 or prog.step == 1):
                    recorder.log(
                        {
                            "step": prog.step,
                            "tokens": prog.tokens,
                            "train_loss": loss_value,
                            "lr": lr,
                            "tokens_per_second": rate,
                        }
                    )
                postfix = {"loss": f"{sum(recent) / len(recent):.3f}", "tok/s": f"{rate:,.0f}"}
                if last_val is not None:
                    postfix["val"] = f"{last_val:.3f}"
                if config.time_limit and not total_steps:
                    postfix["left"] = f"{max(config.time_limit - elapsed, 0):.0f}s"
                bar.set_postfix(postfix, refresh=False)
                bar.update(1)
            if signals:
                save_state()
                sig = signal.Signals(signals[0])
                raise TrainingInterrupted(
                    f"{sig.name} at step {prog.step}: checkpoint saved in {run_dir}; "
                    f"continue with: gentext train --out {run_dir} --resume",
                    SIGNAL_EXIT.get(sig, 130),
                )
            if last_eval_step != prog.step:
                run_eval()
            save_state()
        seconds = time.perf_counter() - start
        final_val, val_count = None, 0
        if has_val:
            if prog.best_step != prog.step:
                checkpoint.load_weights(run_dir, model)  # report the weights that were kept
            nats, val_count = evaluate(
                model, val_ids, config.seq_len, device, config.batch_size, dtype, FINAL_EVAL_TOKENS
            )
            final_val = nats / val_count
            if main:
                recorder.log({"step": prog.best_step, "full_val_loss": final_val, "val_tokens": val_count})
    finally:
        bar.close()
        if recorder is not None:
            recorder.close()
        distributed.teardown(dist_info)
    return TrainResult(
        steps=prog.step,
        tokens=prog.tokens,
        seconds=seconds,
        train_loss=sum(recent) / len(recent) if recent else math.nan,
        val_loss=final_val,
        best_step=prog.best_step,
        tokens_per_second=(prog.tokens - tokens_at_start) / max(seconds, 1e-9),
        stopped_early=stopped_early,
        val_tokens=val_count,
    )
