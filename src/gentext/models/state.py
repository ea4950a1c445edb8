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
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class State:
    tensors: dict[str, torch.Tensor]
    batch_dims: dict[str, int]
    # Ragged dimensions (an encoder memory's source length): `cat` pads them with zeros, which the
    # kind reads as "nothing here" (a False mask), so rows of different lengths share one batch.
    pad_dims: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if set(self.tensors) != set(self.batch_dims):
            raise ValueError(f"state tensors {sorted(self.tensors)} and batch dims {sorted(self.batch_dims)} differ")

    @property
    def batch_size(self) -> int:
        name = next(iter(self.tensors))
        return self.tensors[name].shape[self.batch_dims[name]]

    def _with(self, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> State:
        return State({k: fn(t, self.batch_dims[k]) for k, t in self.tensors.items()}, self.batch_dims, self.pad_dims)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
        """Apply `fn` to every tensor (device moves, dtype casts)."""
        return self._with(lambda t, _dim: fn(t))

    def select(self, rows: torch.Tensor) -> State:
        """The given rows (B',) in that order; a row may repeat (samples, beams). Outside autograd, a
        run of consecutive rows of a batch-first tensor is a view, not a copy (a served batch whose
        oldest requests ended keeps the rest: a cached model's windows are most of its state); a state
        is never written in place (models/room.py copies a view before appending to it)."""
        start = _consecutive(rows) if not torch.is_grad_enabled() else None

        def pick(t: torch.Tensor, dim: int) -> torch.Tensor:
            if start is not None and dim == 0:
                return t.narrow(0, start, rows.shape[0])
            return t.index_select(dim, rows.to(t.device))

        return self._with(pick)

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

        return State(
            {k: pick(t, self.batch_dims[k], k) for k, t in self.tensors.items()}, self.batch_dims, self.pad_dims
        )

    def detach(self) -> State:
        """Cut the gradient into the past (truncated BPTT)."""
        return self.map(torch.Tensor.detach)

    def float(self) -> State:
        """Floating tensors in float32: a state carried or saved never stays in an autocast dtype."""
        return self.map(lambda t: t.float() if t.is_floating_point() else t)

    def row_shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape per row, ragged dimensions left out: rows of states whose row shapes
        match can be joined (continuous batching's cohorts)."""
        skip = {self.batch_dims[name], self.pad_dims.get(name, -1)}
        return tuple(size for d, size in enumerate(self.tensors[name].shape) if d not in skip)

    @staticmethod
    def cat(states: list[State]) -> State:
        """Join the rows of several states of one kind (every process's rows, new requests);
        ragged dimensions are padded with zeros to the longest."""
        first = states[0]
        joined = {}
        for name, dim in first.batch_dims.items():
            parts = [s.tensors[name] for s in states]
            pad = first.pad_dims.get(name)
            if pad is not None:
                longest = max(t.shape[pad] for t in parts)
                parts = [_pad(t, pad, longest) for t in parts]
            joined[name] = torch.cat(parts, dim=dim)
        return State(joined, first.batch_dims, first.pad_dims)


def _consecutive(rows: torch.Tensor) -> int | None:
    """The first of `rows` where they are consecutive and rising (a run to narrow to), else None."""
    if rows.dim() != 1 or rows.numel() == 0 or rows.dtype not in (torch.long, torch.int):
        return None
    start = int(rows[0])
    return start if int(rows[-1]) - start == rows.numel() - 1 and bool((rows.diff() == 1).all()) else None


def _pad(t: torch.Tensor, dim: int, length: int) -> torch.Tensor:
    if t.shape[dim] == length:
        return t
    shape = list(t.shape)
    shape[dim] = length - t.shape[dim]
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


# -- a model made of models (a mixture, a cache around a network) carries its parts' states side by
# side in one State, each tensor's name prefixed with its part's: `net.h`, `chain.context`.
def nested(parts: dict[str, State]) -> State:
    """One state holding each part's tensors under `part.name`."""
    tensors, dims, pads = {}, {}, {}
    for prefix, state in parts.items():
        for name, tensor in state.tensors.items():
            key = f"{prefix}.{name}"
            tensors[key], dims[key] = tensor, state.batch_dims[name]
            if name in state.pad_dims:
                pads[key] = state.pad_dims[name]
    return State(tensors, dims, pads)


def part_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one part, their prefix taken off (`state_from_tensors` of a nested model)."""
    cut = len(prefix) + 1
    return {name[cut:]: t for name, t in tensors.items() if name.startswith(prefix + ".")}


def part(state: State | None, prefix: str) -> State | None:
    """One part's state out of a `nested` one (None stays None: a fresh start)."""
    if state is None:
        return None
    cut = len(prefix) + 1
    names = [n for n in state.tensors if n.startswith(prefix + ".")]
    return State(
        {n[cut:]: state.tensors[n] for n in names},
        {n[cut:]: state.batch_dims[n] for n in names},
        {n[cut:]: state.pad_dims[n] for n in names if n in state.pad_dims},
    )
