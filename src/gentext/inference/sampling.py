"""Generation: logits transforms (pure functions), the sampling loop and beam search.

Transforms take logits (B, V) and return new logits; each is the identity at its neutral value
and never mutates its input. They apply in one order:

    suppressed ids -> repetition penalty -> no-repeat-ngram -> temperature -> top-k -> top-p -> min-p

(suppressed ids: tokens never generated, such as <unk> at word level unless allowed)

Temperature 0 means greedy (argmax). Probabilities always come from `torch.softmax`, which
subtracts the maximum first, so tiny temperatures and huge logits cannot overflow the way a
hand-written `exp(logits / T)` does. Randomness comes only from the caller's `torch.Generator`,
which lives on the model's device (`make_generator(seed, device)`).

A row whose every token is forbidden (e.g. `no_repeat_ngram_size 1` once the vocabulary is used
up) cannot continue: `generate_ids` gives it the id `NO_TOKEN` (-1) from then on and logs a warning,
and the text layer ends that sample there.

No grad mode is held across a `yield`: each step enters `torch.inference_mode()` on its own, so a
generator may be resumed on any thread (a web server's worker pool does exactly that).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from gentext import threads
from gentext.models import model_device
from gentext.useconfig import SampleConfig

logger = logging.getLogger(__name__)

NEG_INF = float("-inf")
NO_TOKEN = -1  # the id given to a row that has no allowed token left


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL (Keskar et al. 2019): make every token already in `history` (B, L) less likely by
    dividing its positive logit (multiplying a negative one) by `penalty`."""
    if penalty == 1.0 or history.shape[1] == 0:
        return logits
    seen = logits.gather(1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, history, seen)


def apply_no_repeat_ngram(logits: torch.Tensor, history: torch.Tensor, n: int) -> torch.Tensor:
    """Forbid any token that would complete an n-gram already present in `history` (B, L)."""
    if n <= 0 or history.shape[1] < n:
        return logits
    batch, vocab = logits.shape
    windows = history.unfold(1, n, 1)  # (B, W, n): every n-gram so far
    prefix = history[:, history.shape[1] - (n - 1) :]  # (B, n-1): what the next token would extend
    match = (windows[:, :, :-1] == prefix[:, None, :]).all(-1)  # (B, W)
    # Unmatched windows point at a spare column V that is dropped afterwards.
    banned_ids = torch.where(match, windows[:, :, -1], torch.full_like(match, vocab, dtype=history.dtype))
    banned = torch.zeros(batch, vocab + 1, dtype=torch.bool, device=logits.device).scatter_(1, banned_ids, True)
    return logits.masked_fill(banned[:, :vocab], NEG_INF)


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


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """Keep tokens whose probability is at least `min_p` times the most likely one's."""
    if min_p <= 0.0:
        return logits
    probs = torch.softmax(logits.float(), dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values
    return logits.masked_fill(probs < threshold, NEG_INF)


def apply_suppression(logits: torch.Tensor, ids: list[int] | None) -> torch.Tensor:
    """Make the given token ids impossible."""
    if not ids:
        return logits
    return logits.index_fill(-1, torch.tensor(ids, device=logits.device), NEG_INF)


def apply_constraints(
    logits: torch.Tensor, config: SampleConfig, history: torch.Tensor | None, suppress: list[int] | None
) -> torch.Tensor:
    """The transforms that sampling and beam search share: suppressed ids, then the repetition ones."""
    logits = apply_suppression(logits.float(), suppress)
    if history is not None:
        logits = apply_repetition_penalty(logits, history, config.repetition_penalty)
        logits = apply_no_repeat_ngram(logits, history, config.no_repeat_ngram_size)
    return logits


def process_logits(
    logits: torch.Tensor, config: SampleConfig, history: torch.Tensor | None = None, suppress: list[int] | None = None
) -> torch.Tensor:
    """All transforms in the documented order, on float32 logits (B, V); `history` is (B, L) ids."""
    logits = apply_constraints(logits, config, history, suppress)
    if config.temperature > 0:
        logits = apply_temperature(logits, config.temperature)
    logits = apply_top_k(logits, config.top_k)
    logits = apply_top_p(logits, config.top_p)
    return apply_min_p(logits, config.min_p)


def cumulative(logits: torch.Tensor) -> torch.Tensor:
    """Cumulative probabilities (B, V), float64, of softmax(logits); a row with no finite logit
    (every token forbidden) comes out all zeros."""
    alive = torch.isfinite(logits).any(dim=-1, keepdim=True)  # (B, 1)
    probs = torch.softmax(logits.masked_fill(~alive, 0.0), dim=-1).double()
    return probs.cumsum(dim=-1) * alive


def draw(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds u x total, for
    each row of cdf (B, V) and u (B,) in [0, 1); NO_TOKEN where the row's total is 0."""
    total = cdf[:, -1:]
    chosen = torch.searchsorted(cdf, uniform.double()[:, None] * total, right=True).squeeze(-1)
    chosen = chosen.clamp(max=cdf.shape[-1] - 1)
    return torch.where(total.squeeze(-1) > 0, chosen, torch.full_like(chosen, NO_TOKEN))


def choose_next(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one id per row (B,): argmax when temperature is 0, else sample softmax(logits) with
    one uniform draw per row from `generator` (inverse CDF: continuous batching can then sample
    many requests' rows at once, each row's draw from its own request's generator).
    A row with no finite logit (every token forbidden) gets NO_TOKEN."""
    if temperature == 0:
        alive = torch.isfinite(logits).any(dim=-1)
        chosen = logits.argmax(dim=-1)
        return torch.where(alive, chosen, torch.full_like(chosen, NO_TOKEN))
    uniform = torch.rand(logits.shape[0], generator=generator, device=logits.device)
    return draw(cumulative(logits), uniform)


def initial_history(ids: list[int], config: SampleConfig, rows: int, device) -> torch.Tensor | None:
    """The ids the repetition transforms look back on, for `rows` rows (rows, L); None when the
    settings use none."""
    if config.repetition_penalty == 1.0 and config.no_repeat_ngram_size <= 0:
        return None
    return torch.tensor(ids, dtype=torch.long, device=device)[None].expand(rows, -1).contiguous()


def extend_history(history: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor | None:
    """History (rows, L) with the new ids (rows,) appended (an ended row's NO_TOKEN as 0: never read)."""
    return None if history is None else torch.cat([history, ids.clamp(min=0)[:, None]], dim=1)


@dataclass
class Prompt:
    """What a generation starts from: the ids to prime with and, for a conditional kind, the
    condition its `initial_state` takes (source ids (1, S), a picture (1, 3, S, S)); a label is
    a mark token among the ids, which every kind reads (data/conditions.py)."""

    ids: list[int]
    condition: Any = None


def start_state(model: torch.nn.Module, condition, device=None):
    """The one-row state a condition makes (None: the model's own start)."""
    if condition is None:
        return None
    return model.initial_state(1, device or model_device(model), condition=condition)


def prime(model: torch.nn.Module, prompt_ids: list[int], batch: int, condition=None):
    """Run the prompt through the network once, for one stream (from the state `condition` makes,
    else from the model's own start), and copy its state to `batch` rows."""
    device = model_device(model)
    prompt = torch.tensor([prompt_ids], dtype=torch.long, device=device)  # (1, T)
    logits, state = model(prompt, start_state(model, condition, device))  # (1, T, V)
    return logits[:, -1].expand(batch, -1), state.select(torch.zeros(batch, dtype=torch.long, device=device))


def generate_ids(
    model: torch.nn.Module,
    prompt_ids: list[int],
    config: SampleConfig,
    generator: torch.Generator | None = None,
    history_ids: list[int] | None = None,
    suppress: list[int] | None = None,
    condition=None,
) -> Iterator[list[int]]:
    """Yield the next ids (one per sample) one step at a time, all samples as one batch; a row
    with no allowed token left gets NO_TOKEN.

    The prompt runs through the network once; after that only the newest token is fed (the state
    carries the rest). `history_ids` (default: the prompt) seeds the repetition transforms.
    Plain settings (only a temperature and suppressed ids) take `fastsample.PlainChooser`, which
    picks the same ids with far fewer tensor operations per token.
    """
    from gentext.inference.fastsample import PlainChooser, is_plain  # it builds on this module's ops

    batch = config.num_samples
    with torch.inference_mode():
        logits, state = prime(model, prompt_ids, batch, condition)  # (B, V)
        seed = history_ids if history_ids is not None else prompt_ids
        history = initial_history(seed, config, batch, logits.device)  # (B, L) or None
    plain = PlainChooser(config, suppress, logits.device) if is_plain(config) else None
    warned, chosen = False, []
    for step in range(config.max_new_tokens):
        threads.tick(batch)
        with torch.inference_mode():  # per step, never across the yield (see the module docstring)
            if step:  # feed the ids chosen last step; an ended row's (NO_TOKEN) is never read back
                fed = torch.tensor([[max(i, 0)] for i in chosen], device=logits.device)
                logits, state = model(fed, state)
                logits = logits[:, -1]
            if plain is not None:
                chosen = plain(logits, generator)
            else:
                next_ids = choose_next(process_logits(logits, config, history, suppress), config.temperature, generator)
                history, chosen = extend_history(history, next_ids), next_ids.tolist()
        if not warned and NO_TOKEN in chosen:
            logger.warning("every token is forbidden by the sampling settings; a sample ended early")
            warned = True
        yield chosen


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` (the model's: torch.multinomial refuses a CPU generator for CUDA
    probabilities), seeded by the caller or from the OS."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
