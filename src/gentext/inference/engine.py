"""The one engine every generation runs through: a scheduler and a runner around the one sampler.

    submit(Prompt, SampleConfig, listener) -> a job (jobs.py: SampleJob, or BeamJob for beams)

    scheduler  inbox -> waiting -> admitted while their rows fit (`max_rows`; a request larger
               than the batch runs alone), cancelled or finished jobs leave at the next step
    runner     prime the admitted prompts (those of one length in one call) from the states their
               conditions make; then per step, for each cohort: every job chooses its rows' next
               tokens (requests with the same plain settings share one transform), decodes and
               sends its text, says which rows go on; one network call advances the cohort
               (reading the drawn tokens as samples: models/priming.py). A cohort of one request
               under plain settings, or of requests together under the same ones, on a model
               with a compiled run (`draw_ahead`: the recurrent kinds and minGRU, with their cache
               and chain) takes up to AHEAD tokens per call, drawn and read without Python between
               them, then decoded one by one: the same ids, the same events (ahead.py)

Rows live in *cohorts*, rows whose states have the same shape (`Cohort.fits`): a recurrent state's
shape never changes, so RNN and Markov jobs all share one cohort; a KV cache (Transformer,
pretrained) grows with the text, so jobs primed together with prompts of one length step together,
and no row attends to padding. A one-off `generate` is a batch of one on the caller's thread
(`run_until_idle`); `stream` steps it itself (`step`); the server runs `start()`'s thread.

Each job's failure ends that job alone (its setup, its sampler, its text, its listener); only a
failure of a cohort's shared network call ends that cohort's jobs. Everything that touches the
model runs on one thread at a time, in inference mode entered per step (never across a yield).
"""

from __future__ import annotations

import logging
import queue
import threading

import torch

from gentext import threads
from gentext.inference import ahead
from gentext.inference.cohort import Cohort, choose_all
from gentext.inference.events import Done, Text
from gentext.inference.jobs import Job, Prompt, job_for
from gentext.inference.prefixcache import BLOCK, prime_blocks
from gentext.models import State, model_device, start_state
from gentext.models.priming import reading_prompt, reading_samples
from gentext.useconfig import SampleConfig

logger = logging.getLogger(__name__)


class Engine:
    """One model's requests, batched; `submit` adds one, which joins at the next step."""

    def __init__(self, textmodel, max_rows: int = 64):
        self.textmodel, self.max_rows = textmodel, max_rows
        self.model, self.device = textmodel.model, model_device(textmodel.model)
        self.inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.waiting: list[Job] = []
        self.cohorts: list[Cohort] = []
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.rows_last_step = self.most_rows = 0  # rows of the last step and the most at once (metrics, tests)

    def submit(self, prompt: Prompt, config: SampleConfig, listener, cancelled=None, start: bool = False) -> Job:
        """Queue a generation; with `start` the engine's own thread runs it (else the caller runs
        `run_until_idle` or `step`)."""
        job = job_for(prompt, config, listener, cancelled)
        self.inbox.put(job)
        if start:
            self.start()
        return job

    def start(self) -> None:
        """Run the engine on a thread of its own (the server's), from now until the process ends."""
        with self.lock:
            if self.thread is None:
                self.model.eval()
                self.thread = threading.Thread(target=self._serve, name="gentext-engine", daemon=True)
                self.thread.start()

    @property
    def jobs(self) -> list[Job]:
        return [job for cohort in self.cohorts for job in cohort.jobs]

    @property
    def idle(self) -> bool:
        return not self.cohorts and not self.waiting and self.inbox.empty()

    def _serve(self) -> None:
        with torch.inference_mode():  # this thread runs nothing else
            while True:
                self._collect(block=not self.cohorts and not self.waiting)
                self._round()

    def run_until_idle(self) -> None:
        """Run every submitted job to its end on the calling thread."""
        with torch.inference_mode():
            while not self.idle:
                self._round()

    def step(self) -> None:
        """One round (for a caller that yields between rounds: inference mode is entered here,
        never held across the caller's yield)."""
        with torch.inference_mode():
            self._round()

    def _round(self) -> None:
        """Admit what waits and fits, then advance every cohort by one token."""
        self._collect(block=False)
        self._admit()
        if not self.cohorts:
            return
        threads.tick(sum(c.rows for c in self.cohorts))
        for cohort in self.cohorts:
            self._step_safely(cohort)
        if len(self.cohorts) > 1 or not self.cohorts[0].jobs:
            self.cohorts = [c for c in self.cohorts if c.jobs]
        self.rows_last_step = sum(c.rows for c in self.cohorts)
        self.most_rows = max(self.most_rows, self.rows_last_step)

    # -- the scheduler ----------------------------------------------------------------------------
    def _collect(self, block: bool) -> None:
        """Move submitted jobs to the waiting list (waiting for one when there is nothing to do)."""
        if block:
            self.waiting.append(self.inbox.get())
        while not self.inbox.empty():
            self.waiting.append(self.inbox.get_nowait())

    def _admit(self) -> None:
        """Admit waiting jobs in order while their rows fit (one that could never fit runs alone)."""
        used = sum(cohort.rows for cohort in self.cohorts)
        admitted = []
        while self.waiting and (used + self.waiting[0].most_rows <= self.max_rows or (not used and not admitted)):
            job = self.waiting.pop(0)
            if job.cancelled.is_set() or job.config.max_new_tokens == 0:  # nothing to generate: it ends here
                rows = job.config.num_samples
                job.listener(Text([""] * rows))
                job.end(Done(["cancelled" if job.cancelled.is_set() else "length"] * rows, [0] * rows))
                continue
            admitted.append(job)
            used += job.most_rows
        groups: dict[tuple, list[Job]] = {}  # prompts of one length, all with a condition or none
        for job in admitted:
            if self._in_blocks(job):
                groups[("alone", id(job))] = [job]  # from the longest cached prefix on
            else:
                groups.setdefault((len(job.prompt_ids), job.condition is None), []).append(job)
        for group in groups.values():
            group = [job for job in group if self._setup_safely(job)]
            if group:
                self._prime_safely(group)

    def _setup_safely(self, job: Job) -> bool:
        try:
            job.setup(self)
            return True
        except Exception as exc:  # noqa: BLE001 -- this job's settings failed: it ends, nothing else
            logger.exception("setting up a generation failed")
            job.fail(exc)
            return False

    # -- the runner -------------------------------------------------------------------------------
    def _prime_safely(self, group: list[Job]) -> None:
        try:
            logits, state = self._prime(group)
        except Exception as exc:  # noqa: BLE001 -- one group's prompts failed: those jobs end, nothing else
            logger.exception("priming a generation failed")
            for job in group:
                job.fail(exc)
            return
        new = Cohort(group, state, logits)
        target = next((c for c in self.cohorts if c.fits(new)), None)
        if target is None:
            self.cohorts.append(new)
        else:
            target.merge(new)

    def _prime(self, group: list[Job]) -> tuple[torch.Tensor, State]:
        """Run the prompts (all of one length) once, side by side, each from the state its
        condition makes (rows of ragged sources padded: State.cat); each job's rows copy its row.
        A long unconditioned prompt is read alone, from its longest cached prefix on."""
        with reading_prompt():
            if len(group) == 1 and self._in_blocks(group[0]):
                cache = getattr(self.textmodel, "prefix_cache", None)
                last, state = prime_blocks(self.model, cache, group[0].prompt_ids, self.device)
            else:
                prompts = torch.tensor([job.prompt_ids for job in group], device=self.device)  # (G, T)
                starts = [start_state(self.model, job.condition, self.device) for job in group]
                logits, state = self.model(prompts, None if starts[0] is None else State.cat(starts))  # (G, T, V)
                last = logits[:, -1]
        rows = torch.cat([torch.full((job.rows,), g, dtype=torch.long) for g, job in enumerate(group)]).to(self.device)
        return last.index_select(0, rows), state.select(rows)

    @staticmethod
    def _in_blocks(job: Job) -> bool:
        """Is this job's prompt read in blocks through the prefix cache? (Long, and no condition.)"""
        return job.condition is None and len(job.prompt_ids) >= BLOCK

    def _step_safely(self, cohort: Cohort) -> None:
        try:
            self._step(cohort)
        except Exception as exc:  # noqa: BLE001 -- the cohort's shared network call failed: its jobs hear of it
            logger.exception("generation failed")
            for job in cohort.jobs:
                job.fail(exc)
            cohort.jobs = []

    def _step(self, cohort: Cohort) -> None:
        """The cohort's next tokens; drop the jobs that ended; one network call for the rest."""
        if len(cohort.jobs) == 1:  # one request (a one-off call, a lone stream): no bookkeeping
            job = cohort.jobs[0]
            if job.origin is None and ahead.alone(self.model, cohort, job, self._advance):
                return
            fed = self._advance(job, self._choose(job, cohort.logits))
            if fed is None:
                cohort.jobs = []
                return
            state = cohort.state if job.origin is None else cohort.state.select(job.origin)
            return self._run(cohort, [fed], state)
        if ahead.together(self.model, cohort, self._advance):
            return
        choices = choose_all(cohort.jobs, cohort.logits, self._choose)
        rows, kept, fed, offset, moved = [], [], [], 0, False
        for job, choice in zip(cohort.jobs, choices, strict=True):
            held = job.rows
            ids = None if job.ended else self._advance(job, choice)
            if ids is not None:
                kept.append(job)
                fed.append(ids)
                if job.origin is None:
                    rows.append(torch.arange(offset, offset + held))
                else:
                    rows.append(job.origin + offset)
                    moved = True
            else:
                moved = True
            offset += held
        cohort.jobs = kept
        if kept:
            state = cohort.state.select(torch.cat(rows).to(self.device)) if moved else cohort.state
            self._run(cohort, fed, state)

    def _run(self, cohort: Cohort, fed: list, state: State) -> None:
        """One network call: each row reads its chosen token (an ended row's NO_TOKEN as 0: never read)."""
        if len(fed) == 1 and isinstance(fed[0], list):  # one request's ids read back as numbers
            tokens = torch.tensor([max(i, 0) for i in fed[0]], device=self.device)
        elif all(isinstance(ids, list) for ids in fed):
            tokens = torch.tensor([max(i, 0) for ids in fed for i in ids], device=self.device)
        else:
            tokens = torch.cat([torch.as_tensor(ids, device=self.device) for ids in fed]).clamp(min=0)
        with reading_samples():
            logits, cohort.state = self.model(tokens[:, None], state)
        cohort.logits = logits[:, -1]

    def _choose(self, job: Job, logits: torch.Tensor):
        try:
            return job.choose(logits)
        except Exception as exc:  # noqa: BLE001 -- this job's own transforms failed: it alone ends
            logger.exception("choosing a token failed")
            job.fail(exc)
            return None

    def _advance(self, job: Job, choice):
        if job.ended:
            return None
        try:
            return job.advance(choice)
        except Exception as exc:  # noqa: BLE001 -- decoding or the listener failed: this job ends
            logger.exception("a generation failed")
            job.fail(exc)
            return None
