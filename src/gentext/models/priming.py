"""What the model is reading, for kinds that treat it differently: a generation's prompt (the
engine's priming), the model's own samples (the engine's steps), or given text (anything else:
training, scoring, evaluation).

A recurrent network in a weight format other than fp32 reads a prompt token by token in that
format (models/rnn.py), as its generation steps do. A neural cache (models/cache.py) remembers
given text and prompts but not the model's own samples: fed its own outputs it copies them back
and free samples loop."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_READING = contextvars.ContextVar("gentext_reading", default="text")


@contextlib.contextmanager
def _reading(what: str) -> Iterator[None]:
    token = _READING.set(what)
    try:
        yield
    finally:
        _READING.reset(token)


def reading_prompt():
    """Within: the sequences a model reads are prompts to generate from."""
    return _reading("prompt")


def reading_samples():
    """Within: the tokens a model reads are the ones it has just drawn."""
    return _reading("samples")


def is_reading_prompt() -> bool:
    return _READING.get() == "prompt"


def is_reading_samples() -> bool:
    return _READING.get() == "samples"
