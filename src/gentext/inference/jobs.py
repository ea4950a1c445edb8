"""The request types of the engine: a job owns some rows of a batch and says, each step, which
token each of its rows reads next and which of its rows go on.

- `SampleJob`: `num_samples` rows, each drawn by the request's sampler from its own seeded
  generator; its rows go on in place until the job ends.
- `BeamJob`: beam search as rows of the batch. Hypotheses are rows; each step keeps the best
  `num_beams` continuations (`origin`: the row each came from), so beam requests batch with
  everything else. Finished ones are ranked by log-probability / length ** length_penalty
  (Wu et al. 2016), and the search stops once no live hypothesis can beat them (`_settled`).

A job hears nothing of other jobs: the same transforms on the same logits and its own generator
give the text it gets alone (up to a batched product's rounding). Its listener hears `Text` after
each step and exactly one `Done`/`Failed` (`end`), whichever path ends it first.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from gentext.inference.constraints import compile_for
from gentext.inference.events import Done, Event, Failed, Text
from gentext.inference.generation import SampleTexts, continuation, cut_at_stop
from gentext.inference.processors import NEG_INF
from gentext.inference.sampler import NO_TOKEN, Sampler, float32_uniforms, make_generator
from gentext.useconfig import SampleConfig

logger = logging.getLogger(__name__)
AHEAD = 16  # the most tokens a plain request draws in one compiled run (inference/ahead.py)


@dataclasses.dataclass
class Prompt:
    """What a generation starts from: the ids to prime with and, for a conditional kind, the
    condition its `initial_state` takes (source ids (1, S), a picture (1, 3, S, S)); a label is
    a mark token among the ids, which every kind reads (data/conditions.py)."""

    ids: list[int]
    condition: Any = None


class Job:
    """A request's rows in the batch; subclasses choose tokens."""

    def __init__(self, prompt: Prompt, config: SampleConfig, listener: Callable[[Event], None], cancelled=None):
        self.prompt_ids, self.condition = list(prompt.ids), prompt.condition
        self.config, self.listener = config, listener
        self.cancelled = cancelled if cancelled is not None else threading.Event()
        self.ended, self.steps = False, 0
        self.rows = self.start_rows  # rows it holds in the batch now
        self.origin: torch.Tensor | None = None  # after a step: which of its rows each new row continues

    start_rows = 1
    most_rows = 1  # the most rows it will hold (admission counts these)

    def setup(self, engine) -> None:
        """Made when admitted (a failure here ends this job alone): sampler, generator, texts."""
        model, cfg = engine.textmodel, self.config
        self.end_id = model.end_id
        suppressed = model.suppressed(cfg)
        constraint = compile_for(model.tokenizer, suppressed, cfg.regex, cfg.json_schema)  # cached per pattern
        self.sampler = Sampler(cfg, suppressed, engine.device, model.tokenizer.vocab_size, constraint)
        self.generator = make_generator(cfg.seed, engine.device)
        self.history = self.sampler.history(self.prompt_ids, self.rows, engine.device)

    def ahead(self) -> int:
        """How many tokens this job may take in one run without choosing each (0: one a step)."""
        return 0

    def end(self, event: Event) -> None:
        """Tell the listener how the job ended, exactly once, whatever path gets here first: its
        owner frees the request's place on this call, so a second call would free it twice."""
        if not self.ended:
            self.ended = True
            try:
                self.listener(event)
            except Exception:  # a listener that fails on the last event has nothing left to hear
                logger.exception("a generation's listener failed")

    def fail(self, exc: BaseException) -> None:
        self.end(Failed.of(exc))


class SampleJob(Job):
    def __init__(self, prompt, config, listener, cancelled=None):
        self.start_rows = self.most_rows = config.num_samples
        super().__init__(prompt, config, listener, cancelled)

    def setup(self, engine) -> None:
        super().setup(engine)
        self.texts = SampleTexts(engine.textmodel.tokenizer, self.prompt_ids, self.config)
        self.warned = False  # about a row left without an allowed token
        self.scored: list[list[dict]] = []  # this step's log-probabilities per row (config.logprobs)

    def choose(self, logits: torch.Tensor):
        """This job's next ids (a tensor, or a list on the one-row fast path)."""
        ids = self.sampler.choose(logits, self.generator, self.history)
        if self.history is not None:
            self.history = self.history.extend(ids if isinstance(ids, torch.Tensor) else torch.tensor(ids))
        self.score(logits, ids)
        return ids

    def score(self, logits: torch.Tensor, ids) -> None:
        """This step's log-probabilities of the chosen ids (and the top ones), where the request asks
        for them: from `choose`, or from the engine where requests sharing settings drew together."""
        if self.config.logprobs is not None:
            self.scored = token_logprobs(logits, torch.as_tensor(ids), self.config.logprobs)

    def ahead(self) -> int:
        """Rows under plain settings, whose tokens nothing but their text reads (no history, no
        log-probabilities), may take up to AHEAD at once: one row, or a batch of them greedy or
        drawing from float32 numbers (`float32_uniforms`: what the kernels draw)."""
        sampler = self.sampler
        batched = sampler.temperature == 0 or float32_uniforms()
        if not sampler.plain or self.config.logprobs is not None or (self.rows != 1 and not batched):
            return 0
        return min(AHEAD, self.config.max_new_tokens - self.steps)

    def advance(self, ids) -> Any:
        """Decode the new ids and send the text; the ids to feed, or None once the job ended."""
        self.steps += 1
        listed = ids if isinstance(ids, list) else ids.tolist()
        if NO_TOKEN in listed and not self.warned and self._stuck(listed):
            logger.warning("every token is forbidden by the sampling settings; a sample ended early")
            self.warned = True
        going = [not s.done for s in self.texts.samples] if self.scored else None  # before this step's tokens
        reason = ""
        if self.texts.step(listed, self.end_id):
            reason = "time"
        elif self.steps >= self.config.max_new_tokens:
            reason = "length"
        elif self.cancelled.is_set():
            reason = "cancelled"
        if reason:
            self.texts.finish(reason)
        if self.scored:  # each row's token and its log-probabilities, for rows that were still going
            kept = [[s] if alive and s["id"] >= 0 else [] for s, alive in zip(self.scored, going, strict=True)]
            self.listener(Text(self.texts.take(), [[s["id"] for s in k] for k in kept], kept))
        else:
            self.listener(Text(self.texts.take()))
        if reason:
            self.end(self.texts.done())
            return None
        return ids

    def _stuck(self, listed: list[int]) -> bool:
        """Is a row without a token for want of one (not because its pattern is complete)?"""
        constraint, states = self.sampler.constraint, self.history.states if self.history is not None else None
        return any(
            token == NO_TOKEN and (constraint is None or not constraint.complete(states[row]))
            for row, token in enumerate(listed)
        )


class BeamJob(Job):
    def __init__(self, prompt, config, listener, cancelled=None):
        if config.length_penalty is None:
            config = dataclasses.replace(config, length_penalty=1.0)
        self.most_rows = config.num_beams
        super().__init__(prompt, config, listener, cancelled)

    def setup(self, engine) -> None:
        super().setup(engine)
        self.tokenizer, device = engine.textmodel.tokenizer, engine.device
        self.seqs = torch.empty(1, 0, dtype=torch.long, device=device)
        self.scores = torch.zeros(1, device=device)
        self.finished: list[tuple[float, list[int]]] = []
        self.deadline = None if self.config.max_time is None else time.monotonic() + self.config.max_time

    def choose(self, logits: torch.Tensor):
        """The best `num_beams` continuations: (origin row of each, its token); None when the
        search is over."""
        cfg = self.config
        if self.steps >= cfg.max_new_tokens or self.cancelled.is_set():
            return None
        if self.deadline is not None and time.monotonic() > self.deadline:
            return None  # max_time: the hypotheses so far are ranked as they stand
        logits = self.sampler.constrain(logits, self.history)
        if self.sampler.constraint is not None:
            self._close_complete(logits)
        candidates = self.scores[:, None] + torch.log_softmax(logits, dim=-1)  # (K, V)
        vocab = candidates.shape[1]
        top_scores, flat = candidates.flatten().topk(min(cfg.num_beams, candidates.numel()))
        origin, token = flat // vocab, flat % vocab
        keep = torch.isfinite(top_scores)
        origin, token, self.scores = origin[keep], token[keep], top_scores[keep]
        self.seqs = torch.cat([self.seqs[origin], token[:, None]], dim=1)
        if self.history is not None:  # each hypothesis's own past: its row's, then its token
            self.history = self.history.select(origin).extend(token)
        return origin, token

    def advance(self, choice) -> Any:
        """Rank what finished; the tokens to feed (rows `origin`), or None once the search ended."""
        self.steps += 1
        if choice is None:
            return self._finish()
        origin, token = choice
        if self.end_id is not None:
            ended = token == self.end_id
            for i in ended.nonzero().flatten().tolist():
                score = self.scores[i].item() / self.steps**self.config.length_penalty
                self.finished.append((score, self.seqs[i].tolist()))
            self.scores = self.scores.masked_fill(ended, NEG_INF)
        if self.finished and (not torch.isfinite(self.scores).any() or self._settled()):
            return self._finish()
        if self.seqs.shape[0] == 0:
            return self._finish()
        self.origin, self.rows = origin, int(origin.shape[0])
        return token

    def _close_complete(self, logits: torch.Tensor) -> None:
        """Hypotheses whose pattern is complete with nothing allowed after it have finished."""
        closed = ~torch.isfinite(logits).any(dim=-1)
        length = max(self.seqs.shape[1], 1)
        for row in closed.nonzero().flatten().tolist():
            if self.sampler.constraint.complete(self.history.states[row]):
                score = self.scores[row].item() / length**self.config.length_penalty
                self.finished.append((score, self.seqs[row].tolist()))
        self.scores = self.scores.masked_fill(closed, NEG_INF)

    def _settled(self) -> bool:
        """Can no live hypothesis still beat the `num_beams` best finished ones? (Stopping once that
        many had finished, early junk included, ranked a truncated live one first: beams lost to
        greedy.) The bound is optimistic: a live score only falls, at best spread over the longest
        length it may reach."""
        cfg = self.config
        if len(self.finished) < cfg.num_beams:
            return False
        kept = sorted((score for score, _ in self.finished), reverse=True)[cfg.num_beams - 1]
        reach = cfg.max_new_tokens if cfg.length_penalty > 0 else self.steps
        return kept >= self.scores.max().item() / reach**cfg.length_penalty

    def _finish(self) -> None:
        """Rank the finished and the live hypotheses; send the best `num_samples` texts."""
        length = max(self.seqs.shape[1], 1)
        for i in torch.isfinite(self.scores).nonzero().flatten().tolist():
            self.finished.append((self.scores[i].item() / length**self.config.length_penalty, self.seqs[i].tolist()))
        self.finished.sort(key=lambda item: -item[0])
        texts, reasons, tokens = [], [], []
        for _, ids in self.finished[: self.config.num_samples]:
            ended = bool(ids) and ids[-1] == self.end_id
            ids = ids[:-1] if ended else ids
            text, found = cut_at_stop(continuation(self.tokenizer, self.prompt_ids, ids), self.config.stop)
            texts.append(text)
            reasons.append("stop" if ended or found else "length")
            tokens.append(len(ids))
        self.listener(Text(texts))
        self.end(Done(reasons, tokens))


def job_for(prompt: Prompt, config: SampleConfig, listener, cancelled=None) -> Job:
    """The request type its settings ask for."""
    kind = BeamJob if config.num_beams else SampleJob
    return kind(prompt, config, listener, cancelled)


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor, top: int) -> list[dict]:
    """Per row: the chosen id, its log-probability under the model's distribution (before any
    sampling setting reshaped it) and the `top` most likely ids with theirs."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(1, ids.clamp(min=0).to(logp.device)[:, None])[:, 0].tolist()
    best = logp.topk(min(top, logp.shape[-1])) if top else None
    tops = [[]] * len(chosen) if best is None else [list(zip(*pair, strict=True)) for pair in zip(
        best.indices.tolist(), best.values.tolist(), strict=True)]  # fmt: skip
    return [{"id": t, "logprob": v, "top": top} for t, v, top in zip(ids.tolist(), chosen, tops, strict=True)]
