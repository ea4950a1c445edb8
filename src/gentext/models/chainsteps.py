"""A Kneser-Ney chain's rows for generation, a context at a time (`MarkovModel._step`).

Generation asks for one context a row per token, and generated text meets a new order-8 context
most tokens (it revisits short ones all the time). Each context's log-probabilities are computed once
and kept; a new context's row is `distribution`'s recursion, bit for bit, reading only the context's
successors at each order (a slice of the sorted keys) instead of searching every word, and starting
from its longest suffix met before (the recursion up to order n depends on the last n-1 ids alone, so
each level's row is kept by that suffix).

The compiled kernels (native/chain.h) hold the same kept rows and make the same recursion in C++,
where the numpy walk cost more than the network's step; without them this module's Python runs, to
the same numbers. Both take a row's log through ATen's log in double precision and then float32.
"""

from __future__ import annotations

import numpy as np
import torch

from gentext import native

STEP_CACHE_BYTES = 64 << 20  # the rows kept of each kind: 250k rows of a 65-char vocabulary
FEW_CONTEXTS = 8  # new contexts in one step up to which each is computed alone (`_row`), else together


def log_probs(p: np.ndarray) -> torch.Tensor:
    """Probabilities (float64, any shape) -> their logs as float32: the one log every path of the
    chain takes (the kernels call the same ATen log on each row), so steps and sequences agree."""
    return torch.from_numpy(np.ascontiguousarray(p)).log().float()


class StepRows:
    """The kept rows of one fitted chain (`chain`: a MarkovModel); rebuilt with its tables."""

    def __init__(self, chain):
        self.chain = chain
        self.logs: dict[tuple, torch.Tensor] = {}  # a context -> its log-probabilities (V,)
        self.suffixes: dict[tuple, np.ndarray] = {}  # a context's last n-1 ids -> its order-n row
        self.unigram: np.ndarray | None = None  # P(w) of the lowest order
        self.compiled = (None, None)  # (the kernels module, its ChainRows for these tables)

    def __call__(self, context: torch.Tensor) -> torch.Tensor:
        """context (B, order-1) int64 ids, -1 where there is none -> log P(. | context) (B, V) float32."""
        rows = self.compiled_rows()
        if rows is not None:
            return rows(context.cpu().long())
        keys = [tuple(row) for row in context.tolist()]
        missing = [key for key in dict.fromkeys(keys) if key not in self.logs]
        if missing:
            if (len(self.logs) + len(missing)) * self.chain.vocab * 4 > STEP_CACHE_BYTES:
                self.logs.clear()
            if len(missing) <= FEW_CONTEXTS:
                found = [log_probs(self._row(key)) for key in missing]
            else:
                found = log_probs(self.chain.distribution(np.array(missing, dtype=np.int64))).unbind(0)
            self.logs.update(zip(missing, found, strict=True))
        return torch.stack([self.logs[key] for key in keys])

    def _unigram(self) -> np.ndarray:
        if self.unigram is None:
            self.unigram = self.chain.lowest_row()
        return self.unigram

    def compiled_rows(self):
        """The kernels' ChainRows over this chain's tables (the arrays shared, not copied), or None."""
        kernels = native.kernels()
        if kernels is None:
            return None
        if self.compiled[0] is not kernels:
            tables = [{name: torch.from_numpy(np.asarray(a)) for name, a in t.items()} for t in self.chain._tables]
            unigram = torch.from_numpy(self._unigram())
            self.compiled = (kernels, kernels.ChainRows(tables, unigram, STEP_CACHE_BYTES))
        return self.compiled[1]

    def _row(self, context: tuple) -> np.ndarray:
        """P(. | context) (V,) for one context, from its longest suffix kept, each higher order's
        level in turn."""
        kept = self.suffixes
        if len(kept) * self.chain.vocab * 8 > STEP_CACHE_BYTES:
            kept.clear()
        start, p = 2, self._unigram()
        for n in range(self.chain.order, 1, -1):
            if (row := kept.get(context[len(context) - (n - 1) :])) is not None:
                start, p = n + 1, row
                break
        for n in range(start, self.chain.order + 1):
            suffix = context[len(context) - (n - 1) :]
            p = kept[suffix] = self._level(n, suffix, p)
        return p

    def _level(self, n: int, ctx: tuple, p: np.ndarray) -> np.ndarray:
        """One step of the recursion: P(. | ctx) at order n from `p`, the row of order n-1 (not
        changed: rows are kept and shared)."""
        chain, table = self.chain, self.chain._tables[n - 1]
        if min(ctx) < 0 or len(table["ctx"]) == 0:
            return p
        key = 0
        for token in ctx:
            key = key * chain.vocab + token
        pos = int(np.searchsorted(table["ctx"], key))
        if pos == len(table["ctx"]) or table["ctx"][pos] != key:
            return p
        a, b = table["start"][pos], table["start"][pos + 1]
        counts = table["counts"][a:b]
        discounted = np.maximum(counts - table["d"][np.clip(counts, 1, 3).astype(int) - 1], 0.0)
        lower, p = p, table["gamma"][pos] * p
        successors = table["keys"][a:b] % chain.vocab
        p[successors] = discounted / table["total"][pos] + table["gamma"][pos] * lower[successors]
        return p
