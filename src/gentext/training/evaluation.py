"""Held-out loss: total negative log-likelihood of a token stream under a model.

Rows start from a cold state, which a model trained on carried state predicts poorly for a while,
so rows are long (ROW_TOKENS) and the cold starts a small, fixed share of the total. The final
report reads the whole held-out text (`evaluate`); periodic validations read a fixed sample of such
rows spread over the whole split (`evaluate_sample`), so they estimate the final figure instead of
scoring the (often easier) first pages of it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

ROW_TOKENS = 8192


def _score_rows(model: nn.Module, ids: np.ndarray, starts: list[int], length: int, seq_len: int, device) -> float:
    """Total nats of predicting ids[s+1 : s+length+1] for each start s, rows side by side."""
    block = np.stack([np.asarray(ids[s : s + length + 1]) for s in starts]).astype(np.int64)
    block = torch.from_numpy(block).to(device)  # (rows, length + 1)
    total, state = 0.0, None
    for start in range(0, length, seq_len):
        end = min(start + seq_len, length)
        x, y = block[:, start:end], block[:, start + 1 : end + 1]
        logp, state = model(x, state, targets=y)  # (rows, T): no full distributions needed
        total -= logp.double().sum().item()
    return total


def _scored(model: nn.Module, segments: list[tuple[list[int], int]], ids, seq_len: int, device) -> float:
    """Always float32 (no autocast): the same numbers as generation and `gentext eval`."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            return sum(
                _score_rows(model, ids, starts, length, seq_len, device) for starts, length in segments if length
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
    rows with their state carried across windows."""
    if max_tokens is not None and len(ids) > max_tokens + 1:
        ids = ids[: max_tokens + 1]
    n_targets = len(ids) - 1
    if n_targets < 1:
        return 0.0, 0
    rows = max(1, min(batch_size, n_targets // ROW_TOKENS))
    row_len = n_targets // rows
    # B rows of row_len targets, then the remainder (< B targets) as one short row.
    segments = [([r * row_len for r in range(rows)], row_len), ([rows * row_len], n_targets - rows * row_len)]
    return _scored(model, segments, ids, seq_len, device), n_targets


def evaluate_sample(
    model: nn.Module, ids: np.ndarray, seq_len: int, device: torch.device, tokens: int, seed: int = 0
) -> tuple[float, int]:
    """The loss of a fixed random sample of about `tokens` held-out tokens: rows of ROW_TOKENS at
    distinct places drawn (with `seed`) from the whole split; the same rows at every call. Where
    the split is no longer than `tokens`, the whole of it."""
    n_targets = len(ids) - 1
    places = n_targets // ROW_TOKENS
    wanted = max(1, tokens // ROW_TOKENS)
    if n_targets <= tokens or places < wanted:
        return evaluate(model, ids, seq_len, device, max_tokens=tokens)
    chosen = np.random.default_rng(seed).choice(places, size=wanted, replace=False)
    starts = sorted(int(c) * ROW_TOKENS for c in chosen)
    return _scored(model, [(starts, ROW_TOKENS)], ids, seq_len, device), wanted * ROW_TOKENS
