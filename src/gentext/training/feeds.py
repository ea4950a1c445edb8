"""What one training loop reads: a *feed* turns a step number into a batch and scores held-out data.

    WindowFeed   language models: BPTT windows over a token stream; the state carries across windows
    PairFeed     conditional models: random batches of (condition, target) pairs, padded, the
                 condition entering through `initial_state(condition=...)` (seq2seq, captioning)

`training/run.py` drives either the same way (precision, clipping, the non-finite guard, patience,
save-every, TensorBoard, signals, resume, torchrun), so every task gets every feature from one place.
A feed is a pure function of the step: a pair batch is drawn from a generator seeded by (seed, step),
so a resumed run reads exactly the batches the uninterrupted one read, with no sampler state to save.
Under torchrun every rank draws the same global batch and keeps its rows; the loss of a pair batch
is scaled by the global token count, so the ranks' averaged gradients equal one process's.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from gentext.config import TrainConfig
from gentext.data.conditions import Pair
from gentext.data.dataset import BPTTBatches, content_hash
from gentext.errors import GentextError
from gentext.models.scoring import batch as pair_batch
from gentext.models.scoring import evaluate, evaluate_sample, pair_loss, text_condition

# The final report evaluates the whole validation text up to this many tokens (a 10% split of a
# multi-GB corpus would take hours); PTB, WikiText and Tiny Shakespeare are far below it.
FINAL_EVAL_TOKENS = 2_000_000


@dataclass
class Batch:
    inputs: torch.Tensor  # (rows, T) ids the model reads
    targets: torch.Tensor  # (rows, T) ids it predicts
    condition: Any = None  # what initial_state(condition=...) takes; None: the model's own start
    mask: torch.Tensor | None = None  # (rows, T) targets that count (padding does not)
    scale: float | None = None  # loss = -sum(log P[mask]) * scale; None: the mean
    window: int = 0  # a stream's window index (0: the rows start cold)
    tokens: int = 0  # tokens of the global batch (every rank's rows)
    taught: torch.Tensor | None = None  # (rows, T, V) a teacher's distribution of each target (training/distill.py)


class Objective(nn.Module):
    """The training forward pass of any kind: the condition's start state, then the targets' log
    P. One module, so DistributedDataParallel sees the encoder's work inside its forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids, state=None, targets=None, condition=None):
        if condition is not None:
            state = self.model.initial_state(ids.shape[0], ids.device, condition=condition)
        return self.model(ids, state, targets=targets)


class WindowFeed:
    """BPTT windows over one token stream (data/dataset.py), with the teacher's distribution of
    each target where one is given (`teacher`: (N, V), row i for token i; training/distill.py)."""

    carries = True

    def __init__(
        self, train_ids: np.ndarray, val_ids: np.ndarray | None, config: TrainConfig, rows: range, key=None,
        teacher: torch.Tensor | None = None,
    ):  # fmt: skip
        self.batches = BPTTBatches(train_ids, config.batch_size, config.seq_len, rows=rows)
        self.teacher = teacher
        self.val = val_ids if val_ids is not None and len(val_ids) >= 2 else None
        self.config, self.rows = config, rows
        self.steps_per_epoch = self.batches.num_windows
        self.data_hash = key or content_hash(train_ids)

    def batch(self, step: int) -> Batch:
        k = step % self.batches.num_windows
        x, y = self.batches.window(k)
        taught = None if self.teacher is None else self.teacher[self.batches.target_positions(k)]
        return Batch(x, y, window=k, tokens=self.batches.tokens_per_window, taught=taught)

    def validate(self, model, device) -> tuple[float, int] | None:
        if self.val is None:
            return None
        return evaluate_sample(model, self.val, self.config.seq_len, device, self.config.eval_tokens)

    def final(self, model, device) -> tuple[float, int] | None:
        if self.val is None:
            return None
        return evaluate(model, self.val, self.config.seq_len, device, self.config.batch_size, FINAL_EVAL_TOKENS)


class PairFeed:
    """Random padded batches of (source, target ids) pairs with teacher forcing: the decoder reads
    START + target and predicts target + END; `condition_of` turns the batch's sources into what
    the model's `initial_state` takes (default: padded source ids and their lengths)."""

    carries = False

    def __init__(
        self,
        train: list[Pair],
        val: list[Pair],
        ids: tuple[int, int],
        config: TrainConfig,
        rows: range,
        condition_of: Callable | None = None,
        key: str | None = None,
        grouped: bool = False,
    ):
        if not train:
            raise GentextError("no source<TAB>target pairs in the training text")
        self.train, self.val, self.ids, self.config, self.rows = train, val, ids, config, rows
        self.condition_of = condition_of or text_condition
        # `grouped` (captioning: a source is a picture index): a batch draws pictures and takes all
        # of each one's captions, so the picture is encoded once for them (captions.py): the CNN is
        # half a captioner's step. With one caption a picture the draw is the ungrouped one.
        self.groups = _groups(train) if grouped else None
        self.steps_per_epoch = math.ceil(len(train) / config.batch_size)
        self.data_hash = key or pairs_hash(train)
        self.sample = _first_tokens(val, config.eval_tokens)  # periodic validation: a fixed share

    def batch(self, step: int) -> Batch:
        rng = np.random.default_rng([self.config.seed, step])  # a function of the step: resumes exactly
        if self.groups is None:
            chosen = [self.train[i] for i in rng.integers(0, len(self.train), self.config.batch_size)]
        else:  # as many pictures as fill the batch with their captions (the last one's may be cut)
            picks = rng.integers(0, len(self.groups), self.config.batch_size)
            chosen = [self.train[i] for g in picks for i in self.groups[g]][: self.config.batch_size]
        tokens = sum(len(t) + 1 for _, t in chosen)  # the global batch's targets (END included)
        mine = chosen[self.rows.start : self.rows.stop]
        condition, dec_in, dec_out, mask = pair_batch(mine, *self.ids, "cpu", self.condition_of)
        share = len(self.rows) / self.config.batch_size  # DDP averages the ranks' gradients
        return Batch(dec_in, dec_out, condition, mask, scale=1.0 / (tokens * share), tokens=tokens)

    def validate(self, model, device) -> tuple[float, int] | None:
        return pair_loss(model, self.sample, *self.ids, device, condition_of=self.condition_of) if self.val else None

    def final(self, model, device) -> tuple[float, int] | None:
        return pair_loss(model, self.val, *self.ids, device, condition_of=self.condition_of) if self.val else None


Feed = WindowFeed | PairFeed


def pairs_hash(pairs: list[Pair]) -> str:
    digest = hashlib.sha256()
    for source, target in pairs:
        digest.update(np.ascontiguousarray(np.asarray(source, dtype=np.int64)).tobytes() + b"|")
        digest.update(np.ascontiguousarray(np.asarray(target, dtype=np.int64)).tobytes() + b"\n")
    return digest.hexdigest()[:16]


def _groups(pairs: list[Pair]) -> list[list[int]]:
    """The indices of the pairs sharing each source (an int: a picture's index), in first-seen order."""
    groups: dict[int, list[int]] = {}
    for i, (source, _) in enumerate(pairs):
        groups.setdefault(int(source), []).append(i)
    return list(groups.values())


def _first_tokens(pairs: list[Pair], tokens: int) -> list[Pair]:
    """A fixed, spread sample of held-out pairs holding about `tokens` target tokens."""
    if not pairs:
        return []
    per_pair = max(sum(len(t) + 1 for _, t in pairs) / len(pairs), 1.0)
    wanted = min(len(pairs), max(1, int(tokens / per_pair)))
    picks = np.linspace(0, len(pairs) - 1, wanted).round().astype(int)
    return [pairs[i] for i in dict.fromkeys(picks.tolist())]
