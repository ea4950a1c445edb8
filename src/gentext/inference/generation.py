"""From token ids to text: stop strings, time limits, streaming and beam search over a tokenizer.

`sampling` works on ids and logits; this module knows about text, so it decides where a sample
ends (a stop string, `max_time`, the token budget) and what a streaming client may see so far.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import torch

from gentext.data.decoding import decode_with, primed
from gentext.inference import beams, sampling
from gentext.models import model_device
from gentext.useconfig import SampleConfig


def suppressed(tokenizer, config: SampleConfig) -> list[int]:
    """Ids never sampled: <unk> (unless allowed) and label marks (data/conditions.py)."""
    marks = list(getattr(tokenizer, "condition_ids", []))
    return marks if config.allow_unk else [*tokenizer.suppressed_ids, *marks]


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

    def _add(self, piece: str) -> None:
        text = self.pending + piece
        cut, found = cut_at_stop(text, self.stops) if self.stops else (text, False)
        if found:  # a stop string can only end in the new piece: earlier text was searched before
            self.released.append(cut)
            self.pending, self.done = "", True
            return
        keep = min(self.hold, len(text))
        self.released.append(text[: len(text) - keep])
        self.pending = text[len(text) - keep :]

    def step(self, token: int, end_id: int | None) -> None:
        if token == end_id or token == sampling.NO_TOKEN:
            self.finish()
        else:
            self._add(self.decoder.step(token))

    def finish(self) -> None:
        if not self.done:
            self._add(self.decoder.flush())  # e.g. the bytes of a character cut short
            if not self.done:
                self.released.append(self.pending)
            self.pending, self.done = "", True

    def take(self) -> str:
        """The text released since the last call."""
        text = "".join(self.released)
        self.released = []
        return text


class SampleTexts:
    """The texts of one request's samples, one token per sample per step: done when every sample
    has stopped (end of text, no allowed token, a stop string) or `max_time` is up. Shared by the
    one-request loop below and the continuous-batching engine, so both end samples alike."""

    def __init__(self, tokenizer, prompt_ids: list[int], config: SampleConfig):
        self.samples = [_Sample(tokenizer, prompt_ids, config.stop) for _ in range(config.num_samples)]
        self.deadline = None if config.max_time is None else time.monotonic() + config.max_time

    def step(self, ids: list[int], end_id: int | None) -> bool:
        """Decode each sample's new token; True once every sample stopped or the time is up."""
        for sample, token in zip(self.samples, ids, strict=True):
            if not sample.done:
                sample.step(token, end_id)
        return all(s.done for s in self.samples) or (self.deadline is not None and time.monotonic() > self.deadline)

    def finish(self) -> None:
        for sample in self.samples:
            sample.finish()

    def take(self) -> list[str]:
        """Each sample's text released since the last call."""
        return [s.take() for s in self.samples]


def _sample_pieces(
    model: torch.nn.Module,
    tokenizer,
    prompt_ids: list[int],
    config: SampleConfig,
    generator: torch.Generator,
    end_id: int | None = None,
    condition=None,
) -> Iterator[list[str]]:
    """Yield, after every step, the new text of each sample (cut before a stop string). Ends when
    every sample has stopped (end-of-text token or a stop string), at `max_new_tokens`, or after
    `max_time` seconds."""
    texts = SampleTexts(tokenizer, prompt_ids, config)
    steps = sampling.generate_ids(
        model, prompt_ids, config, generator, suppress=suppressed(tokenizer, config), condition=condition
    )
    for next_ids in steps:
        if texts.step(next_ids, end_id):
            break
        yield texts.take()
    texts.finish()
    yield texts.take()


def generate_texts(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    prompt_ids: list[int],
    config: SampleConfig,
    end_id: int | None = None,
    condition=None,
) -> list[str]:
    """`num_samples` texts, each the prompt followed by its continuation (up to `end_id`); from
    the state `condition` makes for a conditional kind (a source, a picture)."""
    if config.num_beams:
        outputs = beams.beam_search(
            model, prompt_ids, config, end_id, suppress=suppressed(tokenizer, config), condition=condition
        )
        outputs = [ids[:-1] if ids and ids[-1] == end_id else ids for ids in outputs]
        return [prompt + cut_at_stop(continuation(tokenizer, prompt_ids, ids), config.stop)[0] for ids in outputs]
    generator = sampling.make_generator(config.seed, model_device(model))
    texts: list[list[str]] = [[prompt] for _ in range(config.num_samples)]
    for pieces in _sample_pieces(model, tokenizer, prompt_ids, config, generator, end_id, condition):
        for text, piece in zip(texts, pieces, strict=True):
            text.append(piece)
    return ["".join(text) for text in texts]


def stream_text(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    prompt_ids: list[int],
    config: SampleConfig,
    end_id: int | None = None,
    condition=None,
) -> Iterator[str]:
    """One sample as pieces of text: the prompt, then new text as it is produced. Text that might
    be the start of a stop string, or part of a character not yet complete, is held back until it
    is known; the pieces join to exactly what `generate_texts` returns."""
    yield prompt
    if config.num_beams:
        yield from (
            text[len(prompt) :]
            for text in generate_texts(model, tokenizer, prompt, prompt_ids, config, end_id, condition)
        )
        return
    generator = sampling.make_generator(config.seed, model_device(model))
    for (piece,) in _sample_pieces(model, tokenizer, prompt_ids, config, generator, end_id, condition):
        if piece:
            yield piece
