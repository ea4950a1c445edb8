"""From token ids to text: stop strings, time limits and what a streaming client may see so far.

The sampler works on ids and logits; this module knows about text, so it decides where a sample
ends (a stop string, the end of text, `max_time`) and releases text that can no longer start a
stop string, so streamed pieces join to exactly the text a whole request returns.
"""

from __future__ import annotations

import re
import time

from gentext.data.decoding import decode_with, primed
from gentext.inference.events import Done
from gentext.inference.sampler import NO_TOKEN
from gentext.useconfig import SampleConfig


def continuation(tokenizer, prompt_ids: list[int], ids: list[int]) -> str:
    """The text that `ids` add after the prompt."""
    return decode_with(primed(tokenizer.decoder(), prompt_ids), ids)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """Backslash escapes as a user typing a stop string means them: \\n, \\t, \\r and \\\\ (others
    stay as typed). A shell passes `--stop "\\n\\n"` as backslash-n; this makes it two newlines."""
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(0)), text)


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


class _Sample:
    """One sample's text: decoded token by token, cut before the first stop string. The last
    (longest stop - 1) characters stay pending until they cannot start a stop string, so text
    once released is final, and each token costs O(1) whatever the length so far."""

    def __init__(self, tokenizer, prompt_ids: list[int], stops: list[str]):
        self.decoder = primed(tokenizer.decoder(), prompt_ids)
        self.stops, self.hold = stops, max((len(s) for s in stops), default=1) - 1
        self.pending, self.released, self.done = "", [], False
        self.reason = ""  # why it ended (events.Done): stop, length, time, cancelled
        self.tokens = 0  # tokens generated (the end of text not counted)

    def _add(self, piece: str) -> None:
        text = self.pending + piece
        cut, found = cut_at_stop(text, self.stops) if self.stops else (text, False)
        if found:  # a stop string can only end in the new piece: earlier text was searched before
            self.released.append(cut)
            self.pending, self.done, self.reason = "", True, self.reason or "stop"
            return
        keep = min(self.hold, len(text))
        self.released.append(text[: len(text) - keep])
        self.pending = text[len(text) - keep :]

    def step(self, token: int, end_id: int | None) -> None:
        if token == end_id or token == NO_TOKEN:
            self.finish("stop")
        else:
            self.tokens += 1
            piece = self.decoder.step(token)
            if self.stops:
                self._add(piece)
            else:  # nothing to look for: no text is held back
                self.released.append(piece)

    def finish(self, reason: str) -> None:
        if not self.done:
            self._add(self.decoder.flush())  # e.g. the bytes of a character cut short
            if not self.done:
                self.released.append(self.pending)
                self.reason = reason
            self.pending, self.done = "", True

    def take(self) -> str:
        """The text released since the last call."""
        text = "".join(self.released)
        self.released = []
        return text


class SampleTexts:
    """The texts of one request's samples, one token per sample per step: done when every sample
    has stopped (end of text, no allowed token, a stop string) or `max_time` is up."""

    def __init__(self, tokenizer, prompt_ids: list[int], config: SampleConfig):
        self.samples = [_Sample(tokenizer, prompt_ids, config.stop) for _ in range(config.num_samples)]
        self.deadline = None if config.max_time is None else time.monotonic() + config.max_time

    def step(self, ids: list[int], end_id: int | None) -> bool:
        """Decode each sample's new token; True once every sample stopped or the time is up."""
        for sample, token in zip(self.samples, ids, strict=True):
            if not sample.done:
                sample.step(token, end_id)
        return all(s.done for s in self.samples) or self.timed_out

    @property
    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() > self.deadline

    def finish(self, reason: str) -> None:
        """End every sample still going, for `reason` (length, time, cancelled)."""
        for sample in self.samples:
            sample.finish(reason)

    def take(self) -> list[str]:
        """Each sample's text released since the last call."""
        return [s.take() for s in self.samples]

    def done(self) -> Done:
        """The request's end: each sample's reason and token count."""
        return Done([s.reason for s in self.samples], [s.tokens for s in self.samples])
