"""The one sampler: how every request's next tokens are chosen, built once per request.

`Sampler(config, suppress, device)` holds the request's logits processors (processors.py) and its
rule for picking: greedy (temperature 0: argmax) or one inverse-CDF draw per row from the
request's own seeded generator. Sampling requests, beams (which read `constrain` alone), the
batch engine and a one-off call all go through it, so a setting means the same everywhere.

**Plain settings** (only suppressed ids and a temperature: what most generations use) take a fast
path inside the sampler: the same arithmetic with the fewest tensor operations (a comparison of a
tensor with a Python number or `isfinite` costs more on a CPU than the arithmetic), and
one stream's draw read back as Python numbers, or made by the compiled kernel (gentext/native)
where it is built. Every path consumes the generator alike and picks the same ids bit for bit
(tests/inference/test_sampler.py compares them on rows of ties, -inf, NaN and huge logits), so a
seed's text never depends on the path.

A row whose every token is forbidden gets `NO_TOKEN` (-1) and its sample ends there. Randomness
comes only from the caller's generator, which lives on the model's device (`make_generator`).
"""

from __future__ import annotations

import math

import torch

from gentext import native
from gentext.inference import processors
from gentext.inference.processors import NEG_INF, History

NO_TOKEN = -1  # the id given to a row that has no allowed token left


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on `device` (torch refuses a CPU generator for CUDA probabilities), seeded by
    the caller or from the OS."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def float32_uniforms() -> bool:
    """Does torch.rand give float32 numbers (the default dtype), as the compiled kernels draw them
    (`uniforms`, a batch's compiled run)?"""
    return torch.get_default_dtype() == torch.float32


def uniforms(generators: list[torch.Generator], counts: list[int], device) -> torch.Tensor:
    """torch.cat of torch.rand(n, generator=g) for each (g, n): requests drawing together, each from
    its own generator; in one compiled call where it is built (on a CPU), the same numbers."""
    kernel = native.kernels() if torch.device(device).type == "cpu" and float32_uniforms() else None
    if kernel is not None:
        return kernel.uniforms(generators, counts)
    return torch.cat([torch.rand(n, generator=g, device=device) for g, n in zip(generators, counts, strict=True)])


def cumulative(logits: torch.Tensor) -> torch.Tensor:
    """Cumulative probabilities (B, V), float64, of softmax(logits); a row with no finite logit
    (every token forbidden) comes out all zeros."""
    alive = torch.isfinite(logits).any(dim=-1, keepdim=True)  # (B, 1)
    probs = torch.softmax(logits.masked_fill(~alive, 0.0), dim=-1).double()
    return probs.cumsum(dim=-1) * alive


def plain_cdf(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """`cumulative` of logits divided by a temperature, for rows (B, V) with a finite logit; a row
    without one comes out NaN instead of zeros, which `draw` ends alike."""
    if temperature != 1.0:
        logits = logits / temperature
    return torch.softmax(logits.float(), dim=-1).double().cumsum(dim=-1)


def draw(cdf: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: the first token whose cumulative probability exceeds u x total, for
    each row of cdf (B, V) and u (B,) in [0, 1); NO_TOKEN where the row's total is 0."""
    total = cdf[:, -1:]
    chosen = torch.searchsorted(cdf, uniform.double()[:, None] * total, right=True).squeeze(-1)
    chosen = chosen.clamp(max=cdf.shape[-1] - 1)
    return torch.where(total.squeeze(-1) > 0, chosen, torch.full_like(chosen, NO_TOKEN))


def greedy(logits: torch.Tensor) -> torch.Tensor:
    """argmax per row (B,); NO_TOKEN for a row with no finite logit."""
    alive = torch.isfinite(logits).any(dim=-1)
    chosen = logits.argmax(dim=-1)
    return torch.where(alive, chosen, torch.full_like(chosen, NO_TOKEN))


def choose_next(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One id per row (B,) of processed logits: argmax at temperature 0, else one inverse-CDF draw
    per row from `generator` (so rows of many requests can be drawn at once, each from its own)."""
    if temperature == 0:
        return greedy(logits)
    uniform = torch.rand(logits.shape[0], generator=generator, device=logits.device)
    return draw(cumulative(logits), uniform)


class Sampler:
    """A request's processors and its rule for picking the next id of each of its rows."""

    def __init__(
        self, config, suppress: list[int] | None = None, device="cpu", vocab: int | None = None, constraint=None
    ):
        self.temperature = config.temperature
        self.constraint = constraint
        self.processors = processors.build(config, suppress, device, constraint)
        self.constraints = [p for p in self.processors if p.constraint]
        self.uses_history = any(not isinstance(p, processors.Suppress) for p in self.constraints)
        self.counts = any(getattr(p, "counts", False) for p in self.processors)
        self.vocab = vocab
        # plain: nothing but suppressed ids and a temperature (the fast path)
        self.plain = all(isinstance(p, (processors.Suppress, processors.Temperature)) for p in self.processors)
        suppressor = next((p for p in self.processors if isinstance(p, processors.Suppress)), None)
        self.suppress = None if suppressor is None else suppressor.index
        # requests whose transforms are the same and read no history share one transform per step
        settings = (config.temperature, config.top_k, config.top_p, config.min_p, tuple(suppress or ()))
        self.key = None if self.uses_history or self.temperature == 0 else settings
        # requests under the same plain settings, greedy ones too, may run ahead together (ahead.py)
        self.plain_key = settings if self.plain else None

    def history(self, prompt_ids: list[int], rows: int, device) -> History | None:
        """What this request's processors look back on (None when none does)."""
        if not self.uses_history:
            return None
        return History.start(prompt_ids, rows, self.vocab if self.counts else None, device, self.constraint)

    def constrain(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        """The constraints alone (what beams apply before ranking), on float32 logits."""
        logits = logits.float()
        for processor in self.constraints:
            logits = processor(logits, history)
        return logits

    def process(self, logits: torch.Tensor, history: History | None) -> torch.Tensor:
        """Every processor in order, on float32 logits (B, V)."""
        logits = logits.float()
        for processor in self.processors:
            logits = processor(logits, history)
        return logits

    def choose(self, logits: torch.Tensor, generator: torch.Generator | None, history: History | None = None):
        """The next id of each row (B,) as a tensor (a list for the one-row fast path)."""
        if self.plain:
            return self._plain(logits, generator)
        return choose_next(self.process(logits, history), self.temperature, generator)

    def cdf(self, logits: torch.Tensor) -> torch.Tensor:
        """The cumulative probabilities a draw reads (rows of requests sharing `key`)."""
        if self.plain:
            logits = logits.float()
            if self.suppress is not None:
                logits = logits.index_fill(-1, self.suppress, NEG_INF)
            return plain_cdf(logits, self.temperature)
        return cumulative(self.process(logits, None))

    def draw(self, logits: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
        """Rows (B, V) of requests sharing `key` drawn with one uniform number each (B,): in one
        call of the compiled kernels where they are built (plain settings on a CPU), the same ids."""
        kernel = native.kernels() if self.plain and logits.device.type == "cpu" else None
        if kernel is not None:
            return kernel.draw_rows(logits, self.temperature, self.suppress, uniform)
        return draw(self.cdf(logits), uniform)

    def _plain(self, logits: torch.Tensor, generator: torch.Generator | None):
        logits = logits.float()
        if logits.shape[0] == 1:
            kernel = native.kernels()
            if kernel is not None and logits.device.type == "cpu":
                return [kernel.plain_draw(logits, self.temperature, self.suppress, generator)]
        if self.temperature != 0 and logits.shape[0] != 1:  # many rows, drawn together
            return self.draw(logits, torch.rand(logits.shape[0], generator=generator, device=logits.device))
        if self.suppress is not None:
            logits = logits.index_fill(-1, self.suppress, NEG_INF)
        if self.temperature == 0:
            return self._argmax(logits) if logits.shape[0] == 1 else greedy(logits)
        uniform = torch.rand(1, generator=generator, device=logits.device)
        cdf = plain_cdf(logits, self.temperature)[0]  # one row, its draw read back as Python numbers
        total = cdf[-1].item()
        if not total > 0:
            return [NO_TOKEN]
        chosen = torch.searchsorted(cdf, uniform.item() * total, right=True).item()
        return [min(chosen, cdf.shape[0] - 1)]

    @staticmethod
    def _argmax(logits: torch.Tensor) -> list[int]:
        chosen = int(logits[0].argmax())
        if math.isfinite(logits[0, chosen].item()):
            return [chosen]
        return greedy(logits).tolist()  # -inf everywhere or a NaN: the general rule
