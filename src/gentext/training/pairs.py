"""Training a sequence-to-sequence model on pairs (`--condition source --model seq2seq`).

The corpus pipeline has already written every pair as `source SOURCE_END target END` into the
token cache (data/conditions.py), so this loop only cuts the id stream into pairs and feeds random
batches of them, padded, with teacher forcing: the decoder reads SOURCE_END + target and predicts
target + END, and padded positions never count in the loss. AdamW, warmup + cosine over the budget
(steps or --time-limit), gradient clipping, periodic validation on the held-out pairs keeping the
best weights, as the stream trainer does.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gentext import checkpoint
from gentext.config import TrainConfig
from gentext.data.conditions import Pair
from gentext.errors import GentextError
from gentext.models.scoring import batch, pair_loss, text_condition
from gentext.training.defaults import DEFAULT_STEPS
from gentext.training.run import _optimizer
from gentext.training.trainer import TrainResult, lr_at


def train_pairs(
    model, train: list[Pair], val: list[Pair], cfg: TrainConfig, out: Path, device, ids, progress, condition_of=None
):
    """Train `model` on (source, target ids) pairs; `ids` = (SOURCE_END id, END id); a source is
    what `condition_of` turns into the encoder's input (default: token ids). Returns TrainResult."""
    source_end_id, end_id = ids
    condition_of = condition_of or text_condition
    if not train:
        raise GentextError("no source<TAB>target pairs in the training text")
    model.to(device).train()
    optimizer = _optimizer(model, cfg, device)
    rng = np.random.default_rng(cfg.seed)
    budget_steps = cfg.steps or (None if cfg.time_limit else DEFAULT_STEPS)
    start, step, tokens, best, best_step, last_loss = time.perf_counter(), 0, 0, math.inf, 0, math.nan
    bar = tqdm(total=budget_steps, disable=not progress, unit="step", dynamic_ncols=True)
    while True:
        elapsed = time.perf_counter() - start
        if (budget_steps is not None and step >= budget_steps) or (cfg.time_limit and elapsed >= cfg.time_limit):
            break
        fraction = max(
            step / budget_steps if budget_steps else 0.0, elapsed / cfg.time_limit if cfg.time_limit else 0.0
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, fraction, cfg)
        chosen = [train[i] for i in rng.integers(0, len(train), cfg.batch_size)]
        condition, dec_in, dec_out, mask = batch(chosen, source_end_id, end_id, device, condition_of)
        loss = -model.pair_log_probs(condition, dec_in, dec_out)[mask].mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step, tokens, last_loss = step + 1, tokens + int(mask.sum()), loss.item()
        bar.update(1)
        if val and (step % cfg.eval_every == 0):
            nats, count = pair_loss(model, val, source_end_id, end_id, device, condition_of=condition_of)
            checkpoint.append_metrics(out, {"step": step, "tokens": tokens, "val_loss": nats / count})
            bar.set_postfix(loss=f"{last_loss:.3f}", val=f"{nats / count:.3f}")
            if nats / count < best:
                best, best_step = nats / count, step
                checkpoint.save_weights(out, model)
    bar.close()
    seconds = time.perf_counter() - start
    return _final(model, val, ids, out, device, (step, tokens, seconds, last_loss, best, best_step), condition_of)


def _final(model, val, ids, out, device, progress, condition_of) -> TrainResult:
    """The best weights (or the last, with no validation), and the held-out loss they score."""
    step, tokens, seconds, last_loss, best, best_step = progress
    started = time.perf_counter()
    if not val or best_step == 0 or best_step == step:
        checkpoint.save_weights(out, model)
        best_step = step
    else:
        checkpoint.load_weights(out, model)
    nats, count = pair_loss(model, val, *ids, device, condition_of=condition_of) if val else (0.0, 0)
    return TrainResult(
        steps=step,
        tokens=tokens,
        seconds=seconds,
        train_loss=last_loss,
        val_loss=nats / count if count else None,
        best_step=best_step,
        tokens_per_second=tokens / max(seconds, 1e-9),
        stopped_early=False,
        val_tokens=count,
        eval_seconds=time.perf_counter() - started,
    )
