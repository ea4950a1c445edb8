"""An exponential moving average of the weights (Polyak averaging), which the run validates and
keeps in place of the weights the last step left.

Late in a run each step moves the weights around a minimum by the noise of one batch; their
average over the last thousand or so steps sits nearer the minimum. Measured on the default
command (RESULTS.md, "A moving average of the weights"): Tiny Shakespeare at 10 minutes, the
network's held-out loss 1.4242 -> 1.3989 at the same speed. The average is torch's `AveragedModel`
with an exponential update whose decay grows from 0 to `decay` over the first steps (so the
random start is forgotten at once): (1 + n) / (10 + n), capped. Buffers are copied, not averaged.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

WEIGHT_AVERAGE = 0.999  # --ema not given where it was measured (defaults.auto_weight_average)
WARMUP = 10


def _exponential(decay: float):
    def update(averages: list[torch.Tensor], currents: list[torch.Tensor], count: torch.Tensor) -> None:
        kept = min(decay, (1 + float(count)) / (WARMUP + float(count)))
        torch._foreach_lerp_(averages, currents, 1 - kept)  # as torch's own EMA update does

    return update


def averaged(model: nn.Module, decay: float) -> AveragedModel | None:
    """The average of `model`'s weights that `update_parameters(model)` keeps (None at decay 0)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=_exponential(decay))
