"""The training loop: truncated BPTT over parallel streams, AdamW, clipping, warmup + cosine.

One step: lr -> (eval / save) -> forward/backward -> clip/step -> log.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from . import checkpoint
from .config import TrainConfig
from .dataset import BPTTBatches
from .errors import GentextError
from .models import map_state

MAX_BAD_STEPS = 5  # consecutive non-finite losses before the run gives up


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    train_loss: float
    val_loss: float | None
    best_step: int
    tokens_per_second: float


def lr_at(step: int, progress: float, config: TrainConfig) -> float:
    """Learning rate: linear warmup over `warmup_steps`, then cosine from the peak down to
    `min_lr_ratio` of it as `progress` (fraction of the budget: steps, epochs or time) goes 0 -> 1."""
    peak = config.learning_rate
    if step < config.warmup_steps:
        return peak * (step + 1) / config.warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = peak * config.min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise GentextError("--device cuda: no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def _cpu_has_bf16() -> bool:
    # bf16 matmuls are only fast with native instructions (AVX-512 BF16 or AMX); emulated they are
    # ~100x slower than float32, so "auto" must not pick them on an AVX2-only CPU.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain float32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if _cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def evaluate(
    model: nn.Module,
    ids: np.ndarray,
    seq_len: int,
    device: torch.device,
    batch_size: int = 16,
    dtype: torch.dtype | None = None,
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of predicting ids[1:] from what precedes, and the number
    of predicted tokens. Streams run in parallel rows with their state carried across windows."""
    if max_tokens is not None and len(ids) > max_tokens + 1:
        ids = ids[: max_tokens + 1]
    n_targets = len(ids) - 1
    if n_targets < 1:
        return 0.0, 0
    # Each row starts from a zero state, which a model trained on carried state predicts poorly for
    # a while: long rows (>= 8192 tokens) keep those cold starts a negligible share of the total.
    batch_size = max(1, min(batch_size, n_targets // 8192))
    row_len = n_targets // batch_size
    was_training = model.training
    model.eval()
    total = 0.0
    with torch.inference_mode(), autocast(device, dtype):
        # B rows of row_len targets, then the remainder (< B targets) as one short row.
        segments = [(batch_size, row_len, 0), (1, n_targets - batch_size * row_len, batch_size * row_len)]
        for rows, length, offset in segments:
            if length == 0:
                continue
            block = np.stack([ids[offset + r * length : offset + (r + 1) * length + 1] for r in range(rows)]).astype(
                np.int64
            )
            block = torch.from_numpy(block).to(device)  # (rows, length + 1)
            state = None
            for start in range(0, length, seq_len):
                end = min(start + seq_len, length)
                x, y = block[:, start:end], block[:, start + 1 : end + 1]
                logits, state = model(x, state)
                total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
    model.train(was_training)
    return total, n_targets


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    # Decay matrices only: decaying biases and gains pulls them to zero for no benefit.
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train(
    model: nn.Module,
    train_ids: np.ndarray,
    val_ids: np.ndarray | None,
    config: TrainConfig,
    run_dir: Path,
    device: torch.device,
    on_eval: Callable[[int, float | None], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train `model` in place; the best-validation weights are saved to `run_dir` as they appear."""
    config = config.with_default_stop()
    batches = BPTTBatches(train_ids, config.batch_size, config.seq_len)
    has_val = val_ids is not None and len(val_ids) >= 2
    dtype = resolve_precision(config.precision, device)
    model.to(device).train()
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        _param_groups(model, config.weight_decay), lr=config.learning_rate, betas=(0.9, 0.99), fused=fused
    )
    total_steps = config.steps
    if config.epochs is not None:
        epoch_steps = math.ceil(config.epochs * batches.num_windows)
        total_steps = epoch_steps if total_steps is None else min(total_steps, epoch_steps)

    step, tokens, bad_steps, lr_scale = 0, 0, 0, 1.0
    best_val, best_step, last_val = math.inf, 0, None
    smoothed = None
    recent: deque[float] = deque(maxlen=20)  # train loss is reported as the mean of the last 20 steps
    state = None
    start = time.perf_counter()
    bar = tqdm(total=total_steps, disable=not progress, unit="step", dynamic_ncols=True, leave=False)

    def run_eval() -> None:
        # Periodic evaluations read the same first `eval_tokens` validation tokens, so they are
        # comparable with each other and cheap; the final report uses the whole validation text.
        nonlocal best_val, best_step, last_val
        if has_val:
            nats, count = evaluate(model, val_ids, config.seq_len, device, config.batch_size, dtype, config.eval_tokens)
            last_val = nats / count
            checkpoint.append_metrics(run_dir, {"step": step, "tokens": tokens, "val_loss": last_val})
        if not has_val or last_val < best_val:
            best_val, best_step = (last_val if has_val else math.inf), step
            checkpoint.save_weights(run_dir, model)
        if on_eval is not None:
            on_eval(step, last_val)

    try:
        while True:
            elapsed = time.perf_counter() - start
            budget = [step / total_steps if total_steps else 0.0]
            if config.time_limit:
                budget.append(elapsed / config.time_limit)
            progress_frac = max(budget)
            if progress_frac >= 1.0:
                break
            lr = lr_at(step, progress_frac, config) * lr_scale
            for group in optimizer.param_groups:
                group["lr"] = lr
            if step > 0 and step % config.eval_every == 0:
                run_eval()

            k = step % batches.num_windows
            if k == 0:
                state = None  # the data wrapped: rows restart, so their old context is meaningless
            x, y = (t.to(device, non_blocking=True) for t in batches.window(k))
            state = map_state(state, torch.Tensor.detach)  # truncated BPTT: no gradient into the past
            with autocast(device, dtype):
                logits, state = model(x, state)  # (B, T, V)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bad_steps += 1
                lr_scale *= 0.5
                state = None
                optimizer.zero_grad(set_to_none=True)
                if bad_steps >= MAX_BAD_STEPS:
                    raise GentextError(
                        f"the loss was not finite for {bad_steps} steps in a row; stopped. The best checkpoint "
                        f"(step {best_step}) is in {run_dir}; try a lower --lr"
                    )
                bar.write(f"warning: non-finite loss at step {step}; step skipped, learning rate halved")
                step += 1
                continue
            bad_steps = 0
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()

            step += 1
            tokens += batches.tokens_per_window
            recent.append(loss_value)
            smoothed = sum(recent) / len(recent)
            rate = tokens / max(time.perf_counter() - start, 1e-9)
            if step % 10 == 0 or step == 1:
                checkpoint.append_metrics(
                    run_dir,
                    {"step": step, "tokens": tokens, "train_loss": loss_value, "lr": lr, "tokens_per_second": rate},
                )
            postfix = {"loss": f"{smoothed:.3f}", "tok/s": f"{rate:,.0f}"}
            if last_val is not None:
                postfix["val"] = f"{last_val:.3f}"
            if config.time_limit and not total_steps:
                postfix["left"] = f"{max(config.time_limit - (time.perf_counter() - start), 0):.0f}s"
            bar.set_postfix(postfix, refresh=False)
            bar.update(1)
        run_eval()
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    final_val = None
    if has_val:
        if best_step != step:
            checkpoint.load_weights(run_dir, model)
        nats, count = evaluate(model, val_ids, config.seq_len, device, config.batch_size, dtype)
        final_val = nats / count
        checkpoint.append_metrics(run_dir, {"step": best_step, "full_val_loss": final_val, "val_tokens": count})
    return TrainResult(
        steps=step,
        tokens=tokens,
        seconds=seconds,
        train_loss=smoothed if smoothed is not None else math.nan,
        val_loss=final_val,
        best_step=best_step,
        tokens_per_second=tokens / max(seconds, 1e-9),
    )
