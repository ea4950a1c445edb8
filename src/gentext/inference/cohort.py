"""Cohorts: the rows that step together in one network call (inference/engine.py). Rows share a
cohort when their states have the same per-row shapes: a recurrent state's never change, so every
RNN and Markov row shares one; a KV cache grows with the text, so rows primed together with
prompts of one length step together and no row attends to padding."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gentext.inference.jobs import Job
from gentext.models import State


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
