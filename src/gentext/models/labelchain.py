"""Kneser-Ney chains that know the label: one chain per label, for a labelled run's mixture.

A plain chain sees a label's mark only while the mark is among its last order-1 tokens, so mixed
into a labelled run it would pull every document towards the average of all labels. Here the
chain of a document's own label is counted on that label's documents alone, and it predicts every
token of the document, however long:

    P_chain(w | history) = P_k(w | last order-1 tokens)   k = the label of the last mark read

with chain 0 counted on every training token for what comes before any mark. The mixture
(models/mixture.py) is then a label-conditioned model twice over, and as a classifier (argmax over
labels of P(text | label)) it reads each label's own n-gram statistics: on the built-in `names`
corpus the chains alone classify 98% of held-out names, a TF-IDF + logistic regression 94%
(RESULTS.md, bench_conditional.py).

The state is the context tail every chain shares (`context`, B x order-1) and the current label
(`label`, B x 1, -1 before any mark), so beams, batches and the server carry it as any other.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.markov import MarkovModel
from gentext.models.state import State


def _state(context: torch.Tensor, label: torch.Tensor) -> State:
    return State({"context": context, "label": label}, {"context": 0, "label": 0})


class LabelChain(nn.Module):
    """`chains[0]` for text before any mark, `chains[1 + k]` for label k; `marks[k]` is k's mark id."""

    carries_state = True

    def __init__(self, order: int, vocab: int, marks: list[int]):
        super().__init__()
        self.order, self.vocab = order, vocab
        config = ModelConfig(kind="markov", order=order, vocab_size=vocab)
        self.chains = nn.ModuleList(MarkovModel(config) for _ in range(len(marks) + 1))
        self.register_buffer("marks", torch.tensor(marks, dtype=torch.int64))
        self._prepare_marks()

    def _prepare_marks(self) -> None:
        self._label_of = np.full(self.vocab, -1, dtype=np.int64)  # token id -> its label, -1 if not a mark
        self._label_of[self.marks.numpy()] = np.arange(len(self.marks))

    def fit(self, ids: np.ndarray) -> LabelChain:
        """Count chain 0 on the whole stream and chain 1+k on the documents of label k (each from
        its mark to the next document's mark), each label's documents joined in their order; a
        label with fewer tokens than the order gets chain 0's counts."""
        ids = np.asarray(ids, dtype=np.int64)
        labels = self._labels(ids[None], np.full((1, 1), -1, dtype=np.int64))[0]
        self.chains[0].fit(ids)
        for k in range(len(self.marks)):
            own = ids[labels == k]
            # a label with (almost) no training text reads the chain of all text, as before any mark
            self.chains[1 + k].fit(own if len(own) >= self.order else ids)
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Each chain takes its tables as they come (MarkovModel.load_state_dict); the marks first.
        if "marks" not in state_dict or len(state_dict["marks"]) != len(self.marks):
            raise RuntimeError("the label chains' marks do not match the run's labels")
        self.marks = state_dict["marks"].to(torch.int64).clone()
        self._prepare_marks()
        for i, chain in enumerate(self.chains):
            prefix = f"chains.{i}."
            chain.load_state_dict({k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}, strict)
        return nn.modules.module._IncompatibleKeys([], [])

    def _labels(self, ids: np.ndarray, start: np.ndarray) -> np.ndarray:
        """The label each position of ids (B, T) is read under: its last mark's, or `start` (B, 1)."""
        found = self._label_of[ids]
        positions = np.where(found >= 0, np.arange(ids.shape[1]), -1)
        last = np.maximum.accumulate(positions, axis=1)
        picked = np.take_along_axis(found, np.maximum(last, 0), axis=1)
        return np.where(last >= 0, picked, start)

    # -- the state contract (models/state.py) ----------------------------------------------------
    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """No tokens yet: a context of -1s (B, order-1) and no label (-1)."""
        if condition is not None:
            raise GentextError("the label chains read the label's mark, not a condition")
        context = self.chains[0].initial_state(batch, device).tensors["context"]
        return _state(context, torch.full((batch, 1), -1, dtype=torch.long, device=device))

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != {"context", "label"}:
            raise GentextError(f"a label-chain state has tensors context and label; got {sorted(tensors)}")
        return _state(tensors["context"], tensors["label"])

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """As MarkovModel.forward, each position read by its label's chain."""
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        inner = State({"context": state.tensors["context"]}, {"context": 0})
        labels = self._labels(ids.cpu().numpy(), state.tensors["label"].cpu().numpy())
        which = labels.reshape(-1) + 1  # chain of each position
        if targets is None and ids.shape[1] == 1 and not torch.is_grad_enabled():
            out, inner = self._step(ids, inner, which)
        else:
            contexts, history = self.chains[0]._contexts(ids, inner)
            inner = self.chains[0]._new_state(history, ids.device)
            words = None if targets is None else targets.reshape(-1, 1).cpu().numpy().astype(np.int64)
            p = np.empty((len(contexts), self.vocab if words is None else 1), dtype=np.float64)
            for c in np.unique(which):
                rows = which == c
                chain = self.chains[c]  # whole rows (no targets) from the seen successors: the same numbers
                p[rows] = (
                    chain.distribution(contexts[rows])
                    if words is None
                    else chain._probabilities(contexts[rows], words[rows])
                )
            out = torch.from_numpy(np.log(p)).float().reshape(*ids.shape, -1).to(ids.device)
            out = out[..., 0] if targets is not None else out
        return out, _state(inner.tensors["context"], torch.from_numpy(labels[:, -1:].copy()).to(ids.device))

    def _step(self, ids: torch.Tensor, inner: State, which: np.ndarray) -> tuple[torch.Tensor, State]:
        """One token per row: each chain's cached step (MarkovModel._step) on the rows it reads."""
        out = torch.empty(ids.shape[0], 1, self.vocab, device=ids.device)
        context = torch.empty(ids.shape[0], self.order - 1, dtype=torch.long, device=ids.device)
        for c in np.unique(which):
            rows = torch.from_numpy(np.nonzero(which == c)[0]).to(ids.device)
            logits, part = self.chains[c]._step(ids[rows], inner.select(rows))
            out[rows], context[rows] = logits, part.tensors["context"]
        return out, State({"context": context}, {"context": 0})

    def num_parameters(self) -> int:
        return sum(chain.num_parameters() for chain in self.chains)
