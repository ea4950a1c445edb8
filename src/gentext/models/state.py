"""The state a model carries from one call to the next, owned by the model kind.

Every model kind returns a `State` from `forward` and makes a fresh one with `initial_state`. A
state is a set of named tensors that share one batch of rows; each tensor says which of its
dimensions is the batch:

    LSTM       h (layers, B, H), c (layers, B, H)          batch dimension 1
    GRU / RNN  h (layers, B, H)                            batch dimension 1
    Markov     context (B, order - 1) ids, -1 = no token   batch dimension 0

Everything outside `models/` works through these methods only — select rows (samples, beams,
continuous batching), take a shard of rows (data parallel), put rows back to their start
(`where` with the model's `initial_state`), detach for truncated BPTT, join states of several
processes, and turn into named tensors and back for `train_state.safetensors`. So a KV cache or a
decoder state with an encoder memory can join later without any caller changing: it only needs
a name and a batch dimension for each of its tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class State:
    tensors: dict[str, torch.Tensor]
    batch_dims: dict[str, int]

    def __post_init__(self) -> None:
        if set(self.tensors) != set(self.batch_dims):
            raise ValueError(f"state tensors {sorted(self.tensors)} and batch dims {sorted(self.batch_dims)} differ")

    @property
    def batch_size(self) -> int:
        name = next(iter(self.tensors))
        return self.tensors[name].shape[self.batch_dims[name]]

    def _with(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> State:
        return State({k: fn(t, self.batch_dims[k]) for k, t in self.tensors.items()}, self.batch_dims)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
        """Apply `fn` to every tensor (device moves, dtype casts)."""
        return self._with(lambda t, _dim: fn(t))

    def select(self, rows: torch.Tensor) -> State:
        """The given rows (B',) in that order; a row may repeat (samples, beams)."""
        return self._with(lambda t, dim: t.index_select(dim, rows.to(t.device)))

    def narrow(self, start: int, length: int) -> State:
        """Rows start .. start+length-1 (a data-parallel process's share)."""
        return self._with(lambda t, dim: t.narrow(dim, start, length).contiguous())

    def where(self, keep: torch.Tensor, other: State) -> State:
        """Rows where `keep` (B,) bool is true from this state, the others from `other` (same shape):
        with `other = model.initial_state(B)` this puts the dropped rows back to their start."""

        def pick(t: torch.Tensor, dim: int, name: str) -> torch.Tensor:
            shape = [1] * t.dim()
            shape[dim] = -1
            return torch.where(keep.to(t.device).view(shape), t, other.tensors[name].to(t.dtype))

        return State({k: pick(t, self.batch_dims[k], k) for k, t in self.tensors.items()}, self.batch_dims)

    def detach(self) -> State:
        """Cut the gradient into the past (truncated BPTT)."""
        return self.map(torch.Tensor.detach)

    def float(self) -> State:
        """Floating tensors in float32: a state carried or saved never stays in an autocast dtype."""
        return self.map(lambda t: t.float() if t.is_floating_point() else t)

    @staticmethod
    def cat(states: list[State]) -> State:
        """Join the rows of several states of one kind (every process's rows, new requests)."""
        first = states[0]
        return State(
            {k: torch.cat([s.tensors[k] for s in states], dim=first.batch_dims[k]) for k in first.tensors},
            first.batch_dims,
        )
