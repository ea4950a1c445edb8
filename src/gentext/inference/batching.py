"""Continuous batching: many generations advance together, one batched network step per token.

One generation alone reads every weight once per token for one row; 64 rows cost little more.
The engine keeps every active request's rows in one batch:

    step:  for each job, its rows' logits -> its own transforms and generator -> its tokens
           drop the rows of jobs that ended (stop string, end of text, max_new_tokens, max_time,
           cancelled) -> one network call for all remaining rows -> prime the jobs that arrived

A job's rows see exactly what they would alone: the same transforms on the same logits and the
same seeded generator, so its text is the text `TextModel.generate` gives (up to the rounding of
a batched matrix product). New jobs join at the next step, their prompt run once and its state
rows added with `State.cat`; finished rows leave with `State.select`. This needs a state whose
rows all have one shape: kinds with `carries_state` (RNNs, Markov); a Transformer's cache grows
per row, so its requests keep the one-thread-per-request path (`supports`).

Everything runs on the engine's own thread (grad mode and the model belong to it); results go to
each job's `emit(kind, value)` callback: ("text", piece) ... then ("done", None) or ("error", message).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gentext import threads
from gentext.config import SampleConfig
from gentext.errors import error_text
from gentext.inference import sampling
from gentext.inference.generation import SampleTexts, suppressed
from gentext.models import State, model_device

logger = logging.getLogger(__name__)


@dataclass
class Job:
    prompt_ids: list[int]
    config: SampleConfig
    emit: Callable[[str, object], None]
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


def supports(textmodel, config: SampleConfig) -> bool:
    """Can this request join a batch? (sampling, not beams; a state of fixed shape per row)"""
    return not config.num_beams and getattr(textmodel.model, "carries_state", False)


class BatchEngine:
    """One loop owns the model; `submit` adds a generation, which joins at the next step."""

    def __init__(self, textmodel, max_rows: int = 64):
        self.textmodel, self.max_rows = textmodel, max_rows
        self.model, self.tokenizer = textmodel.model, textmodel.tokenizer
        self.inbox: queue.Queue[Job] = queue.Queue()
        self.waiting: list[Job] = []
        self.jobs: list[Job] = []
        self.state: State | None = None
        self.logits: torch.Tensor | None = None  # (rows, V): the next token's logits of every row
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.rows_last_step = self.most_rows = 0  # rows of the last step and the most at once (metrics, tests)

    def submit(self, prompt_ids: list[int], config: SampleConfig, emit, start: bool = True) -> Job:
        """Queue a generation; with `start` the engine's thread runs it (else `run_until_idle`)."""
        if config.num_samples > self.max_rows:
            raise ValueError(f"num_samples {config.num_samples} exceeds the batch's {self.max_rows} rows")
        job = Job(list(prompt_ids), config, emit)
        self.inbox.put(job)
        if start:
            with self.lock:
                if self.thread is None:
                    self.thread = threading.Thread(target=self._loop, name="gentext-batch", daemon=True)
                    self.thread.start()
        return job

    # -- the loop ---------------------------------------------------------------------------------
    def _loop(self, until_idle: bool = False) -> None:
        self.model.eval()
        with torch.inference_mode():  # one thread runs the model: the mode is never shared
            while True:
                self._collect(block=not self.jobs and not until_idle)
                if until_idle and not self.jobs and not self.waiting:
                    return
                try:
                    self._admit()
                    if self.jobs:
                        threads.tick()
                        self._step()
                except Exception as exc:  # noqa: BLE001 -- the shared network call failed: every job hears of it
                    logger.exception("batched generation failed")
                    for job in self.jobs:
                        job.end("error", error_text(exc))
                    self.jobs, self.state, self.logits = [], None, None

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
        used = sum(job.rows for job in self.jobs)
        admitted = []
        while self.waiting and used + self.waiting[0].rows <= self.max_rows:
            job = self.waiting.pop(0)
            if job.cancelled.is_set() or job.config.max_new_tokens == 0:  # nothing to generate: it ends here
                job.emit("text", [""] * job.rows)
                job.end()
                continue
            admitted.append(job)
            used += job.rows
        by_length: dict[int, list[Job]] = {}
        for job in admitted:
            by_length.setdefault(len(job.prompt_ids), []).append(job)
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
            self.jobs += group
            self.state = state if self.state is None else State.cat([self.state, state])
            self.logits = logits if self.logits is None else torch.cat([self.logits, logits])

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
        """Run the prompts (all of one length) once, side by side; each job's rows copy its row."""
        device = model_device(self.model)
        prompts = torch.tensor([job.prompt_ids for job in group], device=device)  # (G, T)
        logits, state = self.model(prompts, None)  # (G, T, V)
        rows = torch.cat([torch.full((job.rows,), g, dtype=torch.long) for g, job in enumerate(group)]).to(device)
        return logits[:, -1].index_select(0, rows), state.select(rows)

    def _step(self) -> None:
        """Every job's next tokens; drop the jobs that ended; one network call for the rest."""
        choices = self._choose_all()
        keep_rows, keep_jobs, fed = [], [], []
        offset = 0
        for job, ids in zip(self.jobs, choices, strict=True):
            if ids is not None and not job.ended and self._advance_safely(job, ids):
                keep_jobs.append(job)
                keep_rows.extend(range(offset, offset + job.rows))
                fed.append(ids.clamp(min=0))
            offset += job.rows
        self.jobs = keep_jobs
        if not keep_jobs:
            self.state, self.logits = None, None
            return
        self.rows_last_step = len(keep_rows)
        self.most_rows = max(self.most_rows, self.rows_last_step)
        index = torch.tensor(keep_rows, device=self.logits.device)
        state = self.state.select(index) if len(keep_rows) < self.logits.shape[0] else self.state
        logits, self.state = self.model(torch.cat(fed)[:, None], state)
        self.logits = logits[:, -1]

    def _choose_all(self) -> list[torch.Tensor | None]:
        """Each job's next ids (rows,), None for a job that failed (and has ended). Jobs that sample
        with the same settings and keep no history are transformed and turned into probabilities
        together; each job's rows then draw from its own generator, exactly as
        `sampling.choose_next` does for the job alone."""
        starts = [0]
        for job in self.jobs:
            starts.append(starts[-1] + job.rows)
        choices: list[torch.Tensor | None] = [None] * len(self.jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(self.jobs):
            cfg = job.config
            if job.history is not None or cfg.temperature == 0:
                try:
                    choices[i] = self._choose(job, self.logits[starts[i] : starts[i + 1]])
                except Exception as exc:  # noqa: BLE001 -- this job's own transforms failed: it alone ends
                    logger.exception("sampling a batched generation failed")
                    job.end("error", error_text(exc))
            else:
                key = (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p, cfg.allow_unk)
                groups.setdefault(key, []).append(i)
        for members in groups.values():
            try:
                for i, part in zip(members, self._draw_group(members, starts), strict=True):
                    choices[i] = part
            except Exception as exc:  # noqa: BLE001 -- these jobs' shared transform failed: they end, not the rest
                logger.exception("sampling a batched generation failed")
                for i in members:
                    self.jobs[i].end("error", error_text(exc))
        return choices

    def _draw_group(self, members: list[int], starts: list[int]) -> list[torch.Tensor]:
        """The next ids of jobs with the same sampling settings: one transform, each job's own draws."""
        cfg = self.jobs[members[0]].config
        rows = torch.cat([torch.arange(starts[i], starts[i + 1]) for i in members]).to(self.logits.device)
        processed = sampling.process_logits(self.logits[rows], cfg, None, suppressed(self.tokenizer, cfg))
        draws = [torch.rand(self.jobs[i].rows, generator=self.jobs[i].generator, device=rows.device) for i in members]
        ids = sampling.draw(sampling.cumulative(processed), torch.cat(draws))
        return list(ids.split([self.jobs[i].rows for i in members]))

    def _choose(self, job: Job, logits: torch.Tensor) -> torch.Tensor:
        """One job's next ids on its own (greedy, or with a repetition history of its own)."""
        cfg = job.config
        processed = sampling.process_logits(logits, cfg, job.history, suppressed(self.tokenizer, cfg))
        ids = sampling.choose_next(processed, cfg.temperature, job.generator)
        job.history = sampling.extend_history(job.history, ids)
        return ids

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
