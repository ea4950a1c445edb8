"""Choosing the generation step's weight format (models/weights.py) for a loaded model.

`auto` takes the fastest format this device runs natively whose quality cost is within
QUALITY_BOUND. The cost is measured, at load, as the KL divergence per token from the float32
model to the candidate, exact over the vocabulary at every position of text the float32 model
samples itself (ROWS x TOKENS, seeded): what the candidate changes about the distributions
generation draws from, in the nats/token of the held-out loss bound. It takes a fraction of a
second for a char model; `benchmarks/bench_generation.py` reports the held-out loss per format.
"""

from __future__ import annotations

import torch

from gentext.errors import GentextError
from gentext.models import network
from gentext.models.weights import check_format, fast_formats

QUALITY_BOUND = 0.01  # nats/token
ROWS, TOKENS = 4, 128


def supports_formats(model) -> bool:
    return hasattr(model, "set_weight_format")


@torch.inference_mode()
def kl_cost(model, fmt: str, start: list[int], rows: int = ROWS, tokens: int = TOKENS, seed: int = 0) -> float:
    """Mean KL(fp32 || fmt) in nats per position over text the fp32 step samples from `start` ids."""
    model = network(model)  # a mixture's or a cache's format is its network's (models/mixture.py, cache.py)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    ref = cand = model.initial_state(rows, device)
    ids = torch.tensor(start, device=device).repeat(rows, 1)
    for t in range(ids.shape[1] - 1):  # prime both states on the start
        _, ref = model._step(ids[:, t], ref, "fp32")
        _, cand = model._step(ids[:, t], cand, fmt)
    token, total = ids[:, -1], 0.0
    for _ in range(tokens):
        p_logits, ref = model._step(token, ref, "fp32")
        q_logits, cand = model._step(token, cand, fmt)
        logp, logq = torch.log_softmax(p_logits[:, 0].float(), -1), torch.log_softmax(q_logits[:, 0].float(), -1)
        total += (logp.exp() * (logp - logq)).sum().item()
        token = torch.multinomial(logp.exp(), 1, generator=gen)[:, 0]
    return total / (rows * tokens)


def choose(model, name: str, device: torch.device, start: list[int]) -> tuple[str, dict[str, float]]:
    """The format to use for `name` (auto: measured) and the KL costs measured on the way."""
    check_format(name, device)
    if not supports_formats(model):
        if name in ("auto", "fp32"):
            return "fp32", {}
        raise GentextError(
            f"--weights {name} is for language networks (lstm, gru, rnn, transformer); this run is float32 only"
        )
    if name != "auto":
        return name, {}
    costs = {}
    shape = getattr(network(model), "format_check", {})  # rows x tokens, where a kind needs its own
    for fmt in fast_formats(device):
        if fmt == "fp32":
            break
        costs[fmt] = kl_cost(model, fmt, start, **shape)
        if costs[fmt] <= QUALITY_BOUND:
            return fmt, costs
    return "fp32", costs
