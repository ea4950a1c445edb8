"""From token ids to text: stop strings, time limits, streaming and beam search over a tokenizer.

`sampling` works on ids and logits; this module knows about text, so it decides where a sample
ends (a stop string, `max_time`, the token budget) and what a streaming client may see so far.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator

import torch

from . import sampling
from .config import SampleConfig


def suppressed(tokenizer, config: SampleConfig) -> list[int]:
    return [] if config.allow_unk else list(tokenizer.suppressed_ids)


def continuation(tokenizer, prompt_ids: list[int], ids: list[int]) -> str:
    """The text that `ids` add after the prompt."""
    if tokenizer.incremental:
        return tokenizer.decode(ids)
    return tokenizer.decode(prompt_ids + ids)[len(tokenizer.decode(prompt_ids)) :]


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


def _sample_texts(
    model: torch.nn.Module,
    tokenizer,
    prompt_ids: list[int],
    config: SampleConfig,
    generator: torch.Generator,
    end_id: int | None = None,
) -> Iterator[list[str]]:
    """Yield, after every step, each sample's generated text so far (cut at a stop string).
    Ends when every sample has stopped (end-of-text token or a stop string), at
    `max_new_tokens`, or after `max_time` seconds."""
    texts = [""] * config.num_samples
    generated: list[list[int]] = [[] for _ in range(config.num_samples)]
    done = [False] * config.num_samples
    longest_stop = max((len(s) for s in config.stop), default=0)
    deadline = None if config.max_time is None else time.monotonic() + config.max_time
    prompt_text = "" if tokenizer.incremental else tokenizer.decode(prompt_ids)
    for next_ids in sampling.generate_ids(model, prompt_ids, config, generator, suppress=suppressed(tokenizer, config)):
        for i, token in enumerate(next_ids.tolist()):
            if done[i]:
                continue
            if token == end_id:
                done[i] = True
                continue
            before = len(texts[i])
            if tokenizer.incremental:
                texts[i] += tokenizer.decode([token])
            else:  # spacing depends on the neighbours: decode after the prompt, as one text
                generated[i].append(token)
                texts[i] = tokenizer.decode(prompt_ids + generated[i])[len(prompt_text) :]
            if config.stop:
                # Only a stop string that the newest token completed can be new: search from there.
                tail_start = max(before - longest_stop + 1, 0)
                cut, found = cut_at_stop(texts[i][tail_start:], config.stop)
                if found:
                    texts[i], done[i] = texts[i][:tail_start] + cut, True
        yield list(texts)
        if all(done) or (deadline is not None and time.monotonic() > deadline):
            return


def generate_texts(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    prompt_ids: list[int],
    config: SampleConfig,
    end_id: int | None = None,
) -> list[str]:
    """`num_samples` texts, each the prompt followed by its continuation (up to `end_id`)."""
    if config.num_beams:
        outputs = sampling.beam_search(model, prompt_ids, config, end_id, suppress=suppressed(tokenizer, config))
        outputs = [ids[:-1] if ids and ids[-1] == end_id else ids for ids in outputs]
        return [prompt + cut_at_stop(continuation(tokenizer, prompt_ids, ids), config.stop)[0] for ids in outputs]
    generator = sampling.make_generator(config.seed)
    steps = deque(_sample_texts(model, tokenizer, prompt_ids, config, generator, end_id), maxlen=1)
    texts = steps[0] if steps else [""] * config.num_samples
    return [prompt + text for text in texts]


def stream_text(
    model: torch.nn.Module,
    tokenizer,
    prompt: str,
    prompt_ids: list[int],
    config: SampleConfig,
    end_id: int | None = None,
) -> Iterator[str]:
    """One sample as pieces of text: the prompt, then new text as it is produced. Text that might
    be the start of a stop string is held back until it is known not to be."""
    yield prompt
    if config.num_beams:
        yield from (
            text[len(prompt) :] for text in generate_texts(model, tokenizer, prompt, prompt_ids, config, end_id)
        )
        return
    hold = max((len(s) for s in config.stop), default=1) - 1
    shown, text = 0, ""
    for (text,) in _sample_texts(model, tokenizer, prompt_ids, config, sampling.make_generator(config.seed), end_id):
        safe = max(len(text) - hold, shown)
        if safe > shown:
            yield text[shown:safe]
            shown = safe
    if len(text) > shown:
        yield text[shown:]
