"""Held-out loss: total negative log-likelihood of a token stream under a model."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def evaluate(
    model: nn.Module,
    ids: np.ndarray,
    seq_len: int,
    device: torch.device,
    batch_size: int = 16,
    max_tokens: int | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) of predicting ids[1:] from what precedes, and the number
    of predicted tokens. Streams run in parallel rows with their state carried across windows.
    Always float32 (no autocast): the same numbers as generation and `gentext eval`."""
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
    with torch.inference_mode():
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
                logp, state = model(x, state, targets=y)  # (rows, T): no full distributions needed
                total -= logp.double().sum().item()
    model.train(was_training)
    return total, n_targets
