"""Held-out loss: total negative log-likelihood of a token stream under a model.

Rows start from a cold state, which a model trained on carried state predicts poorly for a while,
so rows are long (ROW_TOKENS) and the cold starts a small, fixed share of the total. The final
report reads the whole held-out text (`evaluate`); periodic validations read a fixed, stratified
sample of short warmed-up rows spread over the whole split (`evaluate_sample`), so they estimate the
final figure instead of scoring the (often easier) first pages of it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gentext import threads
from gentext.data.conditions import Pair
from gentext.data.dataset import read_rows
from gentext.models.cache import holds_cache

ROW_TOKENS = 8192
SAMPLE_ROW, SAMPLE_WARM = 1024, 256  # evaluate_sample's rows: scored tokens, and unscored warm-up before them
# Fitting after training reads a network over one stream in windows this long, its state carried: the
# training window's numbers (a recurrent kind's bit for bit, a Transformer's within rounding) in fewer
# calls, which nn.LSTM pays for in laying its weights out again each time.
STREAM_WINDOW = 1024


def _score_rows(
    model: nn.Module, ids: np.ndarray, starts: list[int], length: int, seq_len: int, device, warm: int = 0
) -> float:
    """Total nats of predicting ids[s+1 : s+length+1] for each start s, rows side by side; with
    `warm`, each row first reads the `warm` tokens before s unscored, so it starts warm."""
    block = read_rows(ids, [(s - warm, s + length + 1) for s in starts])  # one row's pages held at a time
    block = torch.from_numpy(block).to(device)  # (rows, warm + length + 1)
    total, state = 0.0, None
    for start in range(0, warm + length, seq_len):
        end = min(start + seq_len, warm + length)
        x, y = block[:, start:end], block[:, start + 1 : end + 1]
        threads.tick()
        logp, state = model(x, state, targets=y)  # (rows, T): no full distributions needed
        total -= logp[:, max(warm - start, 0) :].double().sum().item()
    return total


def _scored(model: nn.Module, segments: list[tuple[list[int], int]], ids, seq_len: int, device, warm: int = 0) -> float:
    """Always float32 (no autocast): the same numbers as generation and `gentext eval`."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return sum(
                _score_rows(model, ids, starts, length, seq_len, device, warm) for starts, length in segments if length
            )
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    ids: np.ndarray,
    seq_len: int,
    device: torch.device,
    batch_size: int = 16,
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of predicting ids[1:] from what precedes (the first
    `max_tokens` of them if given), and the number of predicted tokens. Streams run in parallel
    rows with their state carried across windows; a model with a neural cache reads one stream,
    since its cache is the text's recent past and each row would start it empty (0.005 nats/char
    worse on Tiny Shakespeare), where training's figure and generation read one stream."""
    if max_tokens is not None and len(ids) > max_tokens + 1:
        ids = ids[: max_tokens + 1]
    n_targets = len(ids) - 1
    if n_targets < 1:
        return 0.0, 0
    rows = 1 if holds_cache(model) else max(1, min(batch_size, n_targets // ROW_TOKENS))
    row_len = n_targets // rows
    # B rows of row_len targets, then the remainder (< B targets) as one short row.
    segments = [([r * row_len for r in range(rows)], row_len), ([rows * row_len], n_targets - rows * row_len)]
    return _scored(model, segments, ids, seq_len, device), n_targets


def evaluate_sample(
    model: nn.Module, ids: np.ndarray, seq_len: int, device: torch.device, tokens: int, seed: int = 0
) -> tuple[float, int]:
    """The loss of a fixed sample of about `tokens` held-out tokens, stratified over the whole
    split: it is cut into strata of equal length, and one row of SAMPLE_ROW tokens is scored at a
    seeded random place in each, after reading the SAMPLE_WARM tokens before it (so the sample
    pays no cold starts the full evaluation's few long rows barely pay). The same rows at every
    call. Difficulty varies a lot along a text (Tiny Shakespeare's last 10%: 1.27 to 1.83
    nats/char from one 8k stretch to the next), so many short rows estimate the whole far better
    than a few long ones. Where the split is not much longer than `tokens`, the whole of it."""
    n_targets = len(ids) - 1
    rows = max(1, tokens // SAMPLE_ROW)
    span = n_targets - SAMPLE_WARM - SAMPLE_ROW  # where a row's scored part may start, past the warm-up
    if n_targets <= tokens * 5 // 4 or span < rows:
        return evaluate(model, ids, seq_len, device, max_tokens=tokens if n_targets > tokens * 5 // 4 else None)
    edges = np.linspace(0, span, rows + 1).astype(np.int64)
    offsets = np.random.default_rng(seed).random(rows)
    starts = [
        SAMPLE_WARM + int(a + f * max(b - a - 1, 0)) for a, b, f in zip(edges[:-1], edges[1:], offsets, strict=True)
    ]
    return _scored(model, [(starts, SAMPLE_ROW)], ids, seq_len, device, SAMPLE_WARM), rows * SAMPLE_ROW


DYNAMIC_SEGMENT = 64  # tokens scored between two updates of dynamic evaluation


def evaluate_dynamic(model: nn.Module, ids: np.ndarray, lr: float, device) -> tuple[float, int]:
    """Dynamic evaluation (Krause et al. 2018): total nats of predicting ids[1:] as one stream
    whose weights adapt to the text as it is read — each segment of DYNAMIC_SEGMENT tokens is
    scored first, then the weights take one SGD step (learning rate `lr`) on that segment's mean
    loss, so a segment's figure never saw the segment. Text repeats its own names and turns of
    phrase; the update carries them into the weights. The model's weights are put back after.
    Another figure than `evaluate`'s (it changes the model as it reads), reported under its own
    name."""
    params = [p for p in model.parameters() if p.is_floating_point()]
    saved = [(p.detach().clone(), p.requires_grad) for p in params]
    block = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)[None]
    was_training = model.training
    model.eval()  # no dropout: the figure is the model's, not a noisy one
    total, state = 0.0, None
    try:
        for p in params:
            p.requires_grad_(True)
        with torch.enable_grad():
            for start in range(0, block.shape[1] - 1, DYNAMIC_SEGMENT):
                threads.tick()
                y = block[:, start + 1 : start + DYNAMIC_SEGMENT + 1]
                logp, state = model(block[:, start : start + y.shape[1]], state, targets=y)
                total -= logp.double().sum().item()
                grads = torch.autograd.grad(-logp.mean(), params, allow_unused=True)
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        if g is not None:
                            p.sub_(lr * g)
                state = model.state_from_tensors({k: v.detach() for k, v in state.tensors.items()})
    finally:
        with torch.no_grad():
            for p, (value, grad) in zip(params, saved, strict=True):
                p.copy_(value)
                p.requires_grad_(grad)
        model.train(was_training)
    return total, block.shape[1] - 1


# -- pairs (seq2seq, captions): a decoder scored on padded targets -----------------------------------
def text_condition(sources: list[np.ndarray], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Source ids -> (padded ids (B, S), lengths (B,)): what the seq2seq encoder takes."""
    padded = np.zeros((len(sources), max(len(s) for s in sources)), dtype=np.int64)
    for row, s in enumerate(sources):
        padded[row, : len(s)] = s
    return torch.from_numpy(padded).to(device), torch.tensor([len(s) for s in sources], device=device)


def batch(pairs: list[Pair], source_end_id: int, end_id: int, device, condition_of=text_condition):
    """The encoder's condition (from the pairs' sources), decoder in/out (B, T), the targets' mask."""
    t_len = max(len(t) for _, t in pairs) + 1
    dec_in = np.zeros((len(pairs), t_len), dtype=np.int64)
    dec_out = np.zeros((len(pairs), t_len), dtype=np.int64)
    mask = np.zeros((len(pairs), t_len), dtype=bool)
    for row, (_, t) in enumerate(pairs):
        dec_in[row, : len(t) + 1] = [source_end_id, *t]
        dec_out[row, : len(t) + 1] = [*t, end_id]
        mask[row, : len(t) + 1] = True
    as_tensor = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    condition = condition_of([s for s, _ in pairs], device)
    return condition, as_tensor(dec_in), as_tensor(dec_out), as_tensor(mask)


@torch.inference_mode()
def pair_loss(
    model, pairs: list[Pair], source_end_id: int, end_id: int, device, rows: int = 128, condition_of=text_condition
) -> tuple[float, int]:
    """Total nats and the number of predicted target tokens (END included) over `pairs`."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    ordered = sorted(pairs, key=lambda p: (np.size(p[0]), len(p[1])))  # similar lengths: little padding
    for start in range(0, len(ordered), rows):
        chunk = ordered[start : start + rows]
        condition, dec_in, dec_out, mask = batch(chunk, source_end_id, end_id, device, condition_of)
        logp, _ = model(dec_in, model.initial_state(len(chunk), device, condition=condition), targets=dec_out)
        total -= logp[mask].double().sum().item()
        count += int(mask.sum())
    model.train(was)
    return total, count
