"""The per-token fast path of sampling: the settings most generations use, at a few microseconds.

`sampling.process_logits` + `sampling.choose_next` handle every setting; for the common case
(no repetition penalty, no n-gram ban, no top-k/top-p/min-p: only suppressed ids and a
temperature) they still pay for a dozen small tensor operations a token, several of which
(comparisons with a Python number, `isfinite`) cost 10-20 µs each on a CPU, more than the
arithmetic. `PlainChooser` does the same computation with the fewest operations and, for one
stream, reads the draw back as Python numbers. It consumes the generator exactly as the general
path does and picks the same ids bit for bit (tests/test_sampling.py compares the two), so a
seed's text does not depend on which path ran.
"""

from __future__ import annotations

import math

import torch

from gentext.inference.sampling import NEG_INF, NO_TOKEN, choose_next, draw
from gentext.useconfig import SampleConfig


def is_plain(config: SampleConfig) -> bool:
    """True when the settings transform the logits by suppressed ids and temperature only."""
    return (
        config.repetition_penalty == 1.0
        and config.no_repeat_ngram_size <= 0
        and config.top_k <= 0
        and config.top_p >= 1.0
        and config.min_p <= 0.0
    )


class PlainChooser:
    """Next ids (a list, one per row) from logits (B, V) under plain settings (`is_plain`)."""

    def __init__(self, config: SampleConfig, suppress: list[int] | None, device):
        self.temperature = config.temperature
        self.suppress = torch.tensor(suppress, device=device) if suppress else None  # made once, not per token

    def __call__(self, logits: torch.Tensor, generator: torch.Generator | None) -> list[int]:
        logits = logits.float()
        if self.suppress is not None:
            logits = logits.index_fill(-1, self.suppress, NEG_INF)
        if logits.shape[0] != 1:  # many rows: the general ops, whose cost is shared by the rows
            if self.temperature == 0:
                return choose_next(logits, 0, generator).tolist()
            return self._draw_rows(logits, generator)
        if self.temperature == 0:
            return [self._argmax(logits)]
        uniform = torch.rand(1, generator=generator, device=logits.device)
        cdf = plain_cdf(logits, self.temperature)[0]  # one row, its draw read back as Python numbers
        total = cdf[-1].item()
        if not total > 0:
            return [NO_TOKEN]
        chosen = torch.searchsorted(cdf, uniform.item() * total, right=True).item()
        return [min(chosen, cdf.shape[0] - 1)]

    def _draw_rows(self, logits: torch.Tensor, generator: torch.Generator | None) -> list[int]:
        uniform = torch.rand(logits.shape[0], generator=generator, device=logits.device)
        return draw(plain_cdf(logits, self.temperature), uniform).tolist()

    @staticmethod
    def _argmax(logits: torch.Tensor) -> int:
        chosen = int(logits[0].argmax())
        if math.isfinite(logits[0, chosen].item()):
            return chosen
        return int(choose_next(logits, 0, None)[0])  # -inf everywhere or a NaN: the general rule


def plain_cdf(logits: torch.Tensor, temperature: float, suppress: list[int] | None = None) -> torch.Tensor:
    """`sampling.cumulative(process_logits(...))` under plain settings, for rows (B, V) with a
    finite logit; a row without one comes out NaN instead of zeros, which `draw` ends alike."""
    if suppress:
        logits = logits.index_fill(-1, torch.tensor(suppress, device=logits.device), NEG_INF)
    if temperature != 1.0:
        logits = logits / temperature
    return torch.softmax(logits.float(), dim=-1).double().cumsum(dim=-1)
