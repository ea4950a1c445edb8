"""Generation: logits transforms (pure functions) and the token-by-token loop.

Transforms take logits (B, V) and return new logits; each is the identity at its neutral value
and never mutates its input. They apply in one order:

    temperature -> top-k -> top-p

Temperature 0 means greedy (argmax). Probabilities always come from `torch.softmax`, which
subtracts the maximum first, so tiny temperatures and huge logits cannot overflow the way a
hand-written `exp(logits / T)` does. Randomness comes only from the caller's `torch.Generator`.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from .config import SampleConfig

NEG_INF = float("-inf")


def apply_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by T (> 0): T < 1 sharpens the distribution, T > 1 flattens it."""
    if temperature == 1.0:
        return logits
    return logits / temperature


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the k largest logits per row (ties broken by lower token id); 0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    keep = torch.topk(logits, k, dim=-1, sorted=False).indices
    mask = torch.ones_like(logits, dtype=torch.bool).scatter_(-1, keep, False)
    return logits.masked_fill(mask, NEG_INF)


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus sampling (Holtzman et al. 2020): keep the smallest set of most likely tokens whose
    probability reaches p. The most likely token is always kept, so p -> 0 is greedy."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    # Drop a token when the tokens ranked above it already reach p.
    drop_sorted = (probs.cumsum(dim=-1) - probs) >= p
    drop_sorted[..., 0] = False
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def process_logits(logits: torch.Tensor, config: SampleConfig) -> torch.Tensor:
    """All transforms in the documented order, on float32 logits (B, V)."""
    logits = logits.float()
    if config.temperature > 0:
        logits = apply_temperature(logits, config.temperature)
    logits = apply_top_k(logits, config.top_k)
    return apply_top_p(logits, config.top_p)


def choose_next(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one id per row (B,): argmax when temperature is 0, else sample softmax(logits)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def generate_ids(
    model: torch.nn.Module,
    prompt_ids: list[int],
    config: SampleConfig,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next ids (num_samples,) one step at a time.

    The prompt runs through the network once, for one stream; its state is then copied to every
    sample and only the newest token is fed at each step (the state carries the rest).
    """
    device = next(model.parameters()).device
    batch = config.num_samples
    with torch.inference_mode():
        prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
        logits, state = model(prompt, None)  # (1, T, V)
        logits = logits[:, -1].expand(batch, -1)  # (B, V)
        state = _expand_state(state, batch)
        for _ in range(config.max_new_tokens):
            next_ids = choose_next(process_logits(logits, config), config.temperature, generator)  # (B,)
            yield next_ids
            logits, state = model(next_ids[:, None], state)
            logits = logits[:, -1]


def _expand_state(state, batch: int):
    if isinstance(state, torch.Tensor):
        return state.expand(-1, batch, -1).contiguous()  # (layers, B, H)
    return tuple(_expand_state(s, batch) for s in state)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
