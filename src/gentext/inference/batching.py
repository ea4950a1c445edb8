"""Continuous batching: many generations advance together, one batched network step per token.

One generation alone reads every weight once per token for one row; 64 rows cost little more.
The engine keeps every active request's rows in batches ("cohorts"):

    step:  for each cohort, for each job: its rows' logits -> its own transforms and generator ->
           its tokens (batchjobs.choose_all); drop the rows of jobs that ended (stop string, end of
           text, max_new_tokens, max_time, cancelled) -> one network call for the cohort's rows
    then:  prime the jobs that arrived (prompts of one length together) as a new cohort, and merge
           cohorts whose states have the same shape per row

A recurrent state has one shape whatever the text's length, so RNN and Markov jobs all share one
cohort. A KV cache (Transformer, pretrained) grows with the text, so jobs join one cohort when
their caches are as long: requests that arrive together with prompts of one length (the common
burst) step as one batch, and no row ever attends to another's padding. New jobs join at the
next step (their prompt run once, rows added with `State.cat`); finished rows leave with
`State.select`. Beam search keeps the one-thread-per-request path (`supports`).

Everything runs on the engine's own thread (grad mode and the model belong to it); results go to
each job's `emit(kind, value)` callback: ("text", piece) ... then ("done", None) or ("error", message).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field

import torch

from gentext import threads
from gentext.errors import error_text
from gentext.inference import sampling
from gentext.inference.batchjobs import Collector, Job, choose_all
from gentext.inference.generation import SampleTexts
from gentext.inference.sampling import Prompt
from gentext.models import State, model_device
from gentext.useconfig import SampleConfig

__all__ = ["BatchEngine", "Collector", "Job", "supports"]
logger = logging.getLogger(__name__)


def supports(textmodel, config: SampleConfig) -> bool:
    """Can this request join a batch? (sampling, not beams)"""
    return not config.num_beams


@dataclass
class Cohort:
    """Jobs whose rows step together: one state, one logits row per sample."""

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


class BatchEngine:
    """One loop owns the model; `submit` adds a generation, which joins at the next step."""

    def __init__(self, textmodel, max_rows: int = 64):
        self.textmodel, self.max_rows = textmodel, max_rows
        self.model, self.tokenizer = textmodel.model, textmodel.tokenizer
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.waiting: list[Job] = []
        self.cohorts: list[Cohort] = []
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.rows_last_step = self.most_rows = 0  # rows of the last step and the most at once (metrics, tests)

    def submit(self, prompt: Prompt | list[int], config: SampleConfig, emit, start: bool = True) -> Job:
        """Queue a generation (a Prompt, or bare ids); with `start` the engine's thread runs it
        (else `run_until_idle`)."""
        if config.num_samples > self.max_rows:
            raise ValueError(f"num_samples {config.num_samples} exceeds the batch's {self.max_rows} rows")
        prompt = prompt if isinstance(prompt, Prompt) else Prompt(list(prompt))
        job = Job(list(prompt.ids), config, emit, condition=prompt.condition)
        self.inbox.put(job)
        if start:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._loop, name="gentext-batch", daemon=True)
                    self.thread.start()
        return job

    @property
    def jobs(self) -> list[Job]:
        return [job for cohort in self.cohorts for job in cohort.jobs]

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self, until_idle: bool = False) -> None:
        self.model.eval()
        with torch.inference_mode():  # one thread runs the model: the mode is never shared
            while True:
                self._collect(block=not self.jobs and not until_idle)
                if until_idle and not self.jobs and not self.waiting:
                    return
                self._admit()
                if self.cohorts:
                    threads.tick(sum(cohort.rows for cohort in self.cohorts))
                    for cohort in list(self.cohorts):
                        self._step_safely(cohort)
                    self.cohorts = [c for c in self.cohorts if c.jobs]
                    self.rows_last_step = sum(c.rows for c in self.cohorts)
                    self.most_rows = max(self.most_rows, self.rows_last_step)

    def run_until_idle(self) -> None:
        """Run the submitted jobs to their end on the calling thread (batch jobs, no server)."""
        self._loop(until_idle=True)

    def _collect(self, block: bool) -> None:
        """Move submitted jobs to the waiting list (waiting for one when the batch is idle)."""
        try:
            if block and not self.waiting:
                self.waiting.append(self.inbox.get())
            while True:
                self.waiting.append(self.inbox.get_nowait())
        except queue.Empty:
            pass

    def _admit(self) -> None:
        """Prime the waiting jobs whose rows fit, prompts of one length in one call; their state
        rows join the batch."""
        used = sum(cohort.rows for cohort in self.cohorts)
        admitted = []
        while self.waiting and used + self.waiting[0].rows <= self.max_rows:
            job = self.waiting.pop(0)
            if job.cancelled.is_set() or job.config.max_new_tokens == 0:  # nothing to generate: it ends here
                job.emit("text", [""] * job.rows)
                job.end()
                continue
            admitted.append(job)
            used += job.rows
        by_length: dict[tuple[int, bool], list[Job]] = {}  # prompts of one length, all with a condition or none
        for job in admitted:
            by_length.setdefault((len(job.prompt_ids), job.condition is None), []).append(job)
        for group in by_length.values():
            group = self._ready(group)
            if not group:
                continue
            try:
                logits, state = self._prime(group)
            except Exception as exc:  # noqa: BLE001 -- one group's prompts failed: those jobs end, nothing else
                logger.exception("priming a batched generation failed")
                for job in group:
                    job.end("error", error_text(exc))
                continue
            self._join(Cohort(group, state, logits))

    def _ready(self, group: list[Job]) -> list[Job]:
        """Each job's own generator, text and history; a job whose setup fails ends here, alone."""
        device, ready = model_device(self.model), []
        for job in group:
            try:
                job.generator = sampling.make_generator(job.config.seed, device)
                job.texts = SampleTexts(self.tokenizer, job.prompt_ids, job.config)
                job.history = sampling.initial_history(job.prompt_ids, job.config, job.rows, device)
                ready.append(job)
            except Exception as exc:  # noqa: BLE001 -- this job's settings failed: it ends, nothing else
                logger.exception("setting up a batched generation failed")
                job.end("error", error_text(exc))
        return ready

    def _prime(self, group: list[Job]) -> tuple[torch.Tensor, State]:
        """Run the prompts (all of one length) once, side by side, each from the state its
        condition makes (rows of ragged sources padded: State.cat); each job's rows copy its row."""
        device = model_device(self.model)
        prompts = torch.tensor([job.prompt_ids for job in group], device=device)  # (G, T)
        starts = [sampling.start_state(self.model, job.condition, device) for job in group]
        start = None if starts[0] is None else State.cat(starts)
        logits, state = self.model(prompts, start)  # (G, T, V)
        rows = torch.cat([torch.full((job.rows,), g, dtype=torch.long) for g, job in enumerate(group)]).to(device)
        return logits[:, -1].index_select(0, rows), state.select(rows)

    def _join(self, new: Cohort) -> None:
        target = next((c for c in self.cohorts if c.fits(new)), None)
        if target is None:
            self.cohorts.append(new)
        else:
            target.merge(new)

    def _step_safely(self, cohort: Cohort) -> None:
        try:
            self._step(cohort)
        except Exception as exc:  # noqa: BLE001 -- the cohort's shared network call failed: its jobs hear of it
            logger.exception("batched generation failed")
            for job in cohort.jobs:
                job.end("error", error_text(exc))
            cohort.jobs = []

    def _step(self, cohort: Cohort) -> None:
        """The cohort's next tokens; drop the jobs that ended; one network call for the rest."""
        choices = choose_all(cohort.jobs, cohort.logits, self.tokenizer)
        keep_rows, keep_jobs, fed = [], [], []
        offset = 0
        for job, ids in zip(cohort.jobs, choices, strict=True):
            if ids is not None and not job.ended and self._advance_safely(job, ids):
                keep_jobs.append(job)
                keep_rows.extend(range(offset, offset + job.rows))
                fed.append(ids)
            offset += job.rows
        cohort.jobs = keep_jobs
        if not keep_jobs:
            return
        index = torch.tensor(keep_rows, device=cohort.logits.device)
        state = cohort.state.select(index) if len(keep_rows) < cohort.logits.shape[0] else cohort.state
        logits, cohort.state = self.model(torch.cat(fed).clamp(min=0)[:, None], state)  # an ended row's: never read
        cohort.logits = logits[:, -1]

    def _advance_safely(self, job: Job, ids: torch.Tensor) -> bool:
        try:
            return self._advance(job, ids)
        except Exception as exc:  # noqa: BLE001 -- decoding or the owner's callback failed: this job ends
            logger.exception("a batched generation failed")
            job.end("error", error_text(exc))
            return False

    def _advance(self, job: Job, ids: torch.Tensor) -> bool:
        """Decode the job's new tokens and send its text; False once it has ended."""
        job.steps += 1
        ended = (
            job.texts.step(ids.tolist(), self.textmodel.end_id)
            or job.steps >= job.config.max_new_tokens
            or job.cancelled.is_set()
        )
        if ended:
            job.texts.finish()
        job.emit("text", job.texts.take())
        if ended:
            job.end()
        return not ended
