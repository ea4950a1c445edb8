"""A generation in the batch engine (`Job`), how its rows' next tokens are chosen, and the
`Collector` that gathers a JSON request's samples.

A job's rows see exactly what they would alone: the same transforms on the same logits and the
same seeded generator (`sampling.choose_next`), so its text is the text `TextModel.generate`
gives, up to the rounding of a batched matrix product. Jobs that sample with the same settings
and keep no history are transformed together; each still draws from its own generator.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from gentext.errors import error_text
from gentext.inference import fastsample, sampling
from gentext.inference.generation import SampleTexts, suppressed
from gentext.useconfig import SampleConfig

logger = logging.getLogger(__name__)


@dataclass
class Job:
    prompt_ids: list[int]
    config: SampleConfig
    emit: Callable[[str, object], None]
    condition: Any = None  # what the model's initial_state takes (a source, a picture), if anything
    texts: SampleTexts | None = None  # set when the job is primed
    generator: torch.Generator | None = None
    history: torch.Tensor | None = None
    steps: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)
    ended: bool = False

    @property
    def rows(self) -> int:
        return self.config.num_samples

    def end(self, kind: str = "done", value: object = None) -> None:
        """Tell the job's owner how it ended, exactly once, whatever path gets here first: the
        owner frees its request slot on this call, so a second call would free a slot twice and a
        missing one would leak it."""
        if not self.ended:
            self.ended = True
            self.emit(kind, value)


def choose_all(jobs: list[Job], logits: torch.Tensor, tokenizer) -> list[torch.Tensor | None]:
    """Each job's next ids (rows,) from its rows of `logits`, None for a job that failed (and has
    ended): one job's failure ends that job alone."""
    starts = [0]
    for job in jobs:
        starts.append(starts[-1] + job.rows)
    choices: list[torch.Tensor | None] = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        cfg = job.config
        if job.history is not None or cfg.temperature == 0:
            try:
                choices[i] = _choose(job, logits[starts[i] : starts[i + 1]], tokenizer)
            except Exception as exc:  # noqa: BLE001 -- this job's own transforms failed: it alone ends
                logger.exception("sampling a batched generation failed")
                job.end("error", error_text(exc))
        else:
            key = (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.allow_unk)
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        try:
            parts = _draw_group(
                [jobs[i] for i in members], [(starts[i], starts[i + 1]) for i in members], logits, tokenizer
            )
            for i, part in zip(members, parts, strict=True):
                choices[i] = part
        except Exception as exc:  # noqa: BLE001 -- these jobs' shared transform failed: they end, not the rest
            logger.exception("sampling a batched generation failed")
            for i in members:
                jobs[i].end("error", error_text(exc))
    return choices


def _draw_group(members: list[Job], spans, logits: torch.Tensor, tokenizer) -> list[torch.Tensor]:
    """The next ids of jobs with the same sampling settings: one transform, each job's own draws."""
    cfg = members[0].config
    rows = [i for a, b in spans for i in range(a, b)]
    if rows != list(range(logits.shape[0])):  # not every row in order (the common case): pick them
        logits = logits[torch.tensor(rows, device=logits.device)]
    if fastsample.is_plain(cfg):  # the same cumulative probabilities with fewer operations (fastsample.py)
        cdf = fastsample.plain_cdf(logits, cfg.temperature, suppressed(tokenizer, cfg))
    else:
        cdf = sampling.cumulative(sampling.process_logits(logits, cfg, None, suppressed(tokenizer, cfg)))
    draws = [torch.rand(job.rows, generator=job.generator, device=logits.device) for job in members]
    ids = sampling.draw(cdf, torch.cat(draws))
    return list(ids.split([job.rows for job in members]))


def _choose(job: Job, logits: torch.Tensor, tokenizer) -> torch.Tensor:
    """One job's next ids on its own (greedy, or with a repetition history of its own)."""
    cfg = job.config
    processed = sampling.process_logits(logits, cfg, job.history, suppressed(tokenizer, cfg))
    ids = sampling.choose_next(processed, cfg.temperature, job.generator)
    job.history = sampling.extend_history(job.history, ids)
    return ids


class Collector:
    """An `emit` for `BatchEngine.submit` that gathers each sample's text and how the job ended;
    `on_end(kind, value)` is called (on the engine's thread) when it does."""

    def __init__(self, rows: int, on_end: Callable[[str, object], None] | None = None):
        self.pieces: list[list[str]] = [[] for _ in range(rows)]
        self.end: tuple[str, object] | None = None
        self.on_end = on_end

    def __call__(self, kind: str, value) -> None:
        if kind == "text":
            for pieces, piece in zip(self.pieces, value, strict=True):
                pieces.append(piece)
            return
        self.end = (kind, value)
        if self.on_end is not None:
            self.on_end(kind, value)

    def texts(self, prompt: str) -> list[str]:
        return [prompt + "".join(pieces) for pieces in self.pieces]
