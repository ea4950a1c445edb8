"""Whether the network is reading a generation's prompt (the engine's priming), for kinds whose
sequence path and step path differ in cost: a recurrent network in a weight format other than
fp32 reads a prompt token by token in that format (models/rnn.py), as its generation steps do."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

_READING = contextvars.ContextVar("gentext_reading_prompt", default=False)


@contextlib.contextmanager
def reading_prompt() -> Iterator[None]:
    """Within: the sequences a model reads are prompts to generate from."""
    token = _READING.set(True)
    try:
        yield
    finally:
        _READING.reset(token)


def is_reading_prompt() -> bool:
    return _READING.get()
