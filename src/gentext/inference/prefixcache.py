"""The prefix cache: the state after a prompt's prefix, kept so that requests sharing a long prefix
(a system prompt, a few-shot preamble, a growing conversation, an evaluation's context) skip
reading it again.

A prompt of BLOCK tokens or more is read in blocks that end at multiples of BLOCK, and the state
after each block is kept, keyed by the ids up to it, with the logits after the whole prompt (so an
identical prompt needs no network call). A later prompt starts from the longest kept prefix. Why
blocks at fixed positions: a network's sequence pass gives numbers that depend, in the last bits,
on where a text is cut (a matrix product over 64 positions is not blocked as one over 2,000), so a
prompt is always cut at the same places, cached or not, and its text is the same bit for bit.
Reading in blocks costs a call per block; BLOCK is large enough that this stays small, and small
enough that a shared prefix of 2,000 tokens leaves at most BLOCK - 1 of it to read again.

Least recently used entries go first, within a byte budget (`--prefix-cache-mb`). Requests with a
condition (a source, a picture) are not cached: their state depends on more than the ids.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import torch

from gentext.models import State

BLOCK = 128  # prompts this long or longer are read in blocks ending at multiples of BLOCK


@dataclass
class Entry:
    state: State  # one row, after the ids of its key
    logits: torch.Tensor | None  # (1, V) after the last id: kept for whole prompts
    nbytes: int


class PrefixCache:
    def __init__(self, limit_bytes: int):
        self.limit = limit_bytes
        self.entries: OrderedDict[tuple, Entry] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()
        self.hits = self.misses = 0

    def longest(self, ids: list[int]) -> tuple[int, Entry | None]:
        """The longest kept prefix of `ids` (the whole prompt, with its logits, or a block boundary)."""
        with self.lock:
            whole = self.entries.get(tuple(ids))
            if whole is not None and whole.logits is not None:
                return self._hit(tuple(ids), len(ids), whole)
            for end in range((len(ids) - 1) // BLOCK * BLOCK, 0, -BLOCK):
                key = tuple(ids[:end])
                if key in self.entries:
                    return self._hit(key, end, self.entries[key])
            self.misses += 1
        return 0, None

    def _hit(self, key: tuple, length: int, entry: Entry) -> tuple[int, Entry]:
        self.entries.move_to_end(key)
        self.hits += 1
        return length, entry

    def put(self, ids: list[int], state: State, logits: torch.Tensor | None = None) -> None:
        key = tuple(ids)
        nbytes = _bytes(state) + (0 if logits is None else logits.numel() * logits.element_size()) + 8 * len(ids)
        if nbytes > self.limit:
            return
        with self.lock:
            old = self.entries.pop(key, None)
            if old is not None:
                self.size -= old.nbytes
                logits = logits if logits is not None else old.logits
            self.entries[key] = Entry(state, logits, nbytes)
            self.size += nbytes
            while self.size > self.limit:
                _, dropped = self.entries.popitem(last=False)
                self.size -= dropped.nbytes


def _bytes(state: State) -> int:
    """Memory a state holds (a view of a larger buffer holds the buffer)."""
    storages = {}
    for tensor in state.tensors.values():
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def prime_blocks(model, cache: PrefixCache | None, ids: list[int], device) -> tuple[torch.Tensor, State]:
    """The logits after `ids` (1, V) and the one-row state, the prompt read in blocks that end at
    multiples of BLOCK from the longest kept prefix on; every block's state is kept."""
    position, entry = (0, None) if cache is None else cache.longest(ids)
    state = None if entry is None else entry.state
    if position == len(ids):
        return entry.logits, state
    logits = None
    while position < len(ids):
        end = min((position // BLOCK + 1) * BLOCK, len(ids))
        out, state = model(torch.tensor([ids[position:end]], device=device), state)
        logits, position = out[:, -1], end
        if cache is not None and (end % BLOCK == 0 or end == len(ids)):
            cache.put(ids[:end], state, logits if end == len(ids) else None)
    return logits, state
