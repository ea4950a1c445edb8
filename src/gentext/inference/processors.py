"""Logits processors: each a small object that maps logits (B, V) to new logits, built once per
request from its settings (Hugging Face's `LogitsProcessorList` is the model).

Constraints come first and apply to beams as well (they say what may follow); warpers come after
and shape the distribution a sample is drawn from:

    constraint -> suppressed ids -> repetition penalty -> presence/frequency penalties
    -> no-repeat-ngram -> temperature -> top-k -> top-p -> min-p

(suppressed ids: tokens never generated, such as <unk> at word level unless allowed, and label
marks). Every processor is the identity at its neutral value, is left out of the list there, and
never mutates its input. Probabilities always come from `torch.softmax`, which subtracts the
maximum first, so tiny temperatures and huge logits cannot overflow the way a hand-written
`exp(logits / T)` does. `History` is what the repetition processors read: each row's ids so far.
"""

from __future__ import annotations

import torch

NEG_INF = float("-inf")


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


def apply_presence_frequency(logits: torch.Tensor, counts: torch.Tensor, presence: float, frequency: float):
    """OpenAI's penalties: subtract `frequency` x (times a token occurred) and `presence` x (whether
    it occurred at all) from its logit; `counts` (B, V) counts the generated tokens."""
    if presence == 0.0 and frequency == 0.0:
        return logits
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


class History:
    """What the processors look back on, per row: the ids so far (rows, L); for the presence and
    frequency penalties the count of every generated token (rows, V); for a constraint its state
    (constraints.py). Kept only when a processor reads it; beams reorder it with their rows."""

    def __init__(self, ids: torch.Tensor, counts: torch.Tensor | None = None, states=None, constraint=None):
        self.ids, self.counts, self.states, self.constraint = ids, counts, states, constraint

    @classmethod
    def start(cls, prompt_ids: list[int], rows: int, vocab: int | None, device, constraint=None) -> History:
        ids = torch.tensor(prompt_ids, dtype=torch.long, device=device)[None].expand(rows, -1).contiguous()
        counts = None if vocab is None else torch.zeros(rows, vocab, device=device)
        states = None if constraint is None else [constraint.initial] * rows
        return cls(ids, counts, states, constraint)

    def extend(self, new: torch.Tensor) -> History:
        """With the new ids (rows,) appended (an ended row's NO_TOKEN as 0 in the ids: never read)."""
        states = None if self.states is None else self.constraint.advance(self.states, new.tolist())
        new = new.clamp(min=0)
        counts = self.counts
        if counts is not None:
            counts = counts.scatter_add(1, new[:, None], torch.ones_like(new[:, None], dtype=counts.dtype))
        return History(torch.cat([self.ids, new[:, None]], dim=1), counts, states, self.constraint)

    def select(self, rows: torch.Tensor) -> History:
        counts = None if self.counts is None else self.counts.index_select(0, rows)
        states = None if self.states is None else [self.states[i] for i in rows.tolist()]
        return History(self.ids.index_select(0, rows), counts, states, self.constraint)


class Suppress:
    """Make the given token ids impossible (the index tensor made once, not per token)."""

    constraint = True

    def __init__(self, ids: list[int], device):
        self.ids = ids
        self.index = torch.tensor(ids, device=device)

    def __call__(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        return logits.index_fill(-1, self.index.to(logits.device), NEG_INF)


class RepetitionPenalty:
    constraint = True

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return apply_repetition_penalty(logits, history.ids, self.penalty)


class PresenceFrequency:
    """OpenAI's presence and frequency penalties, over the tokens generated so far."""

    constraint = True
    counts = True

    def __init__(self, presence: float, frequency: float):
        self.presence, self.frequency = presence, frequency

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return apply_presence_frequency(logits, history.counts, self.presence, self.frequency)


class NoRepeatNgram:
    constraint = True

    def __init__(self, n: int):
        self.n = n

    def __call__(self, logits: torch.Tensor, history: History) -> torch.Tensor:
        return apply_no_repeat_ngram(logits, history.ids, self.n)


class Temperature:
    constraint = False

    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        return apply_temperature(logits, self.temperature)


class TopK:
    constraint = False

    def __init__(self, k: int):
        self.k = k

    def __call__(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        return apply_top_k(logits, self.k)


class TopP:
    constraint = False

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        return apply_top_p(logits, self.p)


class MinP:
    constraint = False

    def __init__(self, p: float):
        self.p = p

    def __call__(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        return apply_min_p(logits, self.p)


def build(config, suppress: list[int] | None, device, constraint=None) -> list:
    """The processors a request's settings (a SampleConfig) ask for, in the documented order;
    each neutral setting is left out, so plain settings give a short list. `constraint`: the
    compiled pattern of --regex / --json-schema (constraints.py), which goes first."""
    processors: list = [] if constraint is None else [constraint]
    if suppress:
        processors.append(Suppress(suppress, device))
    if config.repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(config.repetition_penalty))
    presence, frequency = getattr(config, "presence_penalty", 0.0), getattr(config, "frequency_penalty", 0.0)
    if presence or frequency:
        processors.append(PresenceFrequency(presence, frequency))
    if config.no_repeat_ngram_size > 0:
        processors.append(NoRepeatNgram(config.no_repeat_ngram_size))
    if config.temperature > 0 and config.temperature != 1.0:
        processors.append(Temperature(config.temperature))
    if config.top_k > 0:
        processors.append(TopK(config.top_k))
    if config.top_p < 1.0:
        processors.append(TopP(config.top_p))
    if config.min_p > 0.0:
        processors.append(MinP(config.min_p))
    return processors
