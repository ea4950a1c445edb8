"""What a request hears from the engine, in order: `Text` after each step that released text, then
exactly one of `Done` or `Failed`. Typed, so a server maps them to HTTP without reading strings."""

from __future__ import annotations

from dataclasses import dataclass, field

from gentext.errors import GentextError, error_text


@dataclass(frozen=True)
class Text:
    """The text each sample released this step (one piece per sample, '' for none)."""

    pieces: list[str]
    # per sample, the ids this step decoded and (when the request asked) their log-probabilities
    tokens: list[list[int]] = field(default_factory=list)
    logprobs: list[list[dict]] = field(default_factory=list)


@dataclass(frozen=True)
class Done:
    """Every sample ended; why, per sample: "stop" (a stop string, the end of text, no allowed
    token), "length" (the token budget), "time" (`max_time`) or "cancelled"."""

    reasons: list[str]
    tokens: list[int] = field(default_factory=list)  # per sample, the tokens it generated


@dataclass(frozen=True)
class Failed:
    """The request failed: `status` 400 for bad input (the message says what to change), 500 for a
    fault of ours (the message names only the exception's type; the log has the rest)."""

    message: str
    status: int = 500
    error: BaseException | None = field(default=None, compare=False, repr=False)  # re-raised by the Python API

    @classmethod
    def of(cls, exc: BaseException) -> Failed:
        return cls(error_text(exc), 400 if isinstance(exc, GentextError) else 500, exc)


Event = Text | Done | Failed
