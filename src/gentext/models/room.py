"""Inference states that grow a token at a time, appended in place instead of copied.

A Transformer's keys and values and a neural cache's outputs are the state's largest tensors, and
`torch.cat([cache, new])` copied all of them every token: a third of an int8 Transformer token, and
most of a cached LSTM's. Here a state's tensor is a view of a buffer with room to append (`Room`),
and the view knows its span. Appending to the view that ends where the buffer is filled writes in
place; any other view (a second continuation of one state — a shared prompt, beams, the prefix
cache — rows the server joined into a new batch, an inference tensor outside inference mode) is
copied into a new buffer first: the Go-slice rule, so no state ever sees another's writes. Training
keeps `torch.cat` (autograd needs fresh tensors).
"""

from __future__ import annotations

import torch


class Room:
    """A buffer and how far along `dim` it is filled."""

    __slots__ = ("buf", "dim", "filled")

    def __init__(self, buf: torch.Tensor, dim: int, filled: int):
        self.buf, self.dim, self.filled = buf, dim, filled


def _view(room: Room, start: int, end: int) -> torch.Tensor:
    view = room.buf.narrow(room.dim, start, end - start)
    view._room = (room, start, end)
    return view


def append(cache: torch.Tensor, new: torch.Tensor, dim: int, room_for: int) -> torch.Tensor:
    """`cache` followed by `new` along `dim` (the same shape elsewhere), in place where `cache` is
    the view that ends where its buffer is filled and the buffer has room; else in a new buffer
    with `room_for` positions to spare."""
    if torch.is_grad_enabled():
        return torch.cat([cache.to(new.dtype), new], dim=dim)
    length, added = cache.shape[dim], new.shape[dim]
    room, start, end = getattr(cache, "_room", (None, 0, 0))
    writable = room is not None and (torch.is_inference_mode_enabled() or not room.buf.is_inference())
    if writable and room.filled == end and end + added <= room.buf.shape[dim] and room.buf.dtype == new.dtype:
        room.buf.narrow(dim, end, added).copy_(new)
        room.filled = end + added
        return _view(room, start, end + added)
    shape = list(new.shape)
    shape[dim] = length + added + room_for
    buf = new.new_empty(shape)
    buf.narrow(dim, 0, length).copy_(cache)
    buf.narrow(dim, length, added).copy_(new)
    return _view(Room(buf, dim, length + added), 0, length + added)


def tail(full: torch.Tensor, keep: int, dim: int) -> torch.Tensor:
    """The last `keep` positions along `dim`, still knowing their buffer."""
    room, start, end = getattr(full, "_room", (None, 0, 0))
    if room is None:
        return full.narrow(dim, max(0, full.shape[dim] - keep), min(keep, full.shape[dim]))
    return _view(room, max(start, end - keep), end)
