"""Cohorts: the rows that step together in one network call (inference/engine.py). Rows share a
cohort when their states have the same per-row shapes: a recurrent state's never change, so every
RNN and Markov row shares one; a KV cache grows with the text, so rows primed together with
prompts of one length step together and no row attends to padding."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from gentext.inference.jobs import Job, SampleJob
from gentext.inference.sampler import uniforms
from gentext.models import State

logger = logging.getLogger(__name__)


@dataclass
class Cohort:
    """Jobs whose rows step together: one state, one logits row per row."""

    jobs: list[Job] = field(default_factory=list)
    state: State | None = None
    logits: torch.Tensor | None = None  # (rows, V): the next token's logits of every row

    @property
    def rows(self) -> int:
        return sum(job.rows for job in self.jobs)

    def fits(self, other: Cohort) -> bool:
        """Same per-row shapes: their rows can share one network call."""
        mine, theirs = self.state, other.state
        return all(mine.row_shape(name) == theirs.row_shape(name) for name in mine.tensors)

    def merge(self, other: Cohort) -> None:
        self.jobs += other.jobs
        self.state = State.cat([self.state, other.state])
        self.logits = torch.cat([self.logits, other.logits])


def choose_all(jobs: list[Job], logits: torch.Tensor, choose_one) -> list:
    """Each job's choice from its rows of `logits`; sampling jobs with the same plain or shared
    settings and no history are transformed together, each drawing from its own generator; the
    rest by `choose_one(job, its logits)`."""
    starts = [0]
    for job in jobs:
        starts.append(starts[-1] + job.rows)
    choices: list = [None] * len(jobs)
    groups: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        key = job.sampler.key if isinstance(job, SampleJob) else None
        if key is None:
            choices[i] = choose_one(job, logits[starts[i] : starts[i + 1]])
        else:
            groups.setdefault(key, []).append(i)
    for members in groups.values():
        try:
            drawn = _draw_group([jobs[i] for i in members], [starts[i] for i in members], logits)
            for i, chosen in zip(members, drawn, strict=True):
                choices[i] = chosen
        except Exception as exc:  # noqa: BLE001 -- these jobs' shared transform failed: they end, not the rest
            logger.exception("sampling a batched generation failed")
            for i in members:
                jobs[i].fail(exc)
    return choices


def _draw_group(group: list[SampleJob], starts: list[int], logits: torch.Tensor) -> list[list[int]]:
    """One draw for requests sharing settings, each from its own generator: each request's ids, read
    back once (as lists: what the engine decodes and feeds); each records its log-probabilities
    where asked."""
    rows = [row for job, start in zip(group, starts, strict=True) for row in range(start, start + job.rows)]
    mine = logits if rows == list(range(logits.shape[0])) else logits[torch.tensor(rows, device=logits.device)]
    uniform = uniforms([job.generator for job in group], [job.rows for job in group], logits.device)
    listed = group[0].sampler.draw(mine, uniform).tolist()
    drawn, offset = [], 0
    for job, start in zip(group, starts, strict=True):
        drawn.append(listed[offset : offset + job.rows])
        job.score(logits[start : start + job.rows], drawn[-1])
        offset += job.rows
    return drawn
