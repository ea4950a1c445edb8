"""An n-gram Markov chain behind the same interface as the networks, smoothed with interpolated
modified Kneser-Ney (Chen & Goodman 1998), so every token has a probability in every context:

    P_n(w | ctx) = max(c(ctx w) - D_n(c), 0) / c(ctx) + gamma(ctx) * P_{n-1}(w | ctx')
    gamma(ctx)   = (D_n1 N1(ctx .) + D_n2 N2(ctx .) + D_n3 N3+(ctx .)) / c(ctx)

The highest order uses raw counts, lower orders continuation counts (how many distinct tokens
precede the n-gram), the unigram level interpolates with the uniform distribution. An unseen
context falls back to the next shorter one, so generation never gets stuck (markovify's `None`).

forward(ids (B, T), state) -> (log-probabilities (B, T, V), state) where the state is the context
tail: a `State` holding `context`, the last order-1 ids (B, order-1), -1 where there is no token
yet. The counts are buffers
(saved in model.safetensors, no pickle); the lookup tables are rebuilt from them on load.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.chainsteps import StepRows, log_probs
from gentext.models.state import State


def _ngram_keys(ids: np.ndarray, n: int, vocab: int) -> np.ndarray:
    """Each n-gram of `ids` as one integer: sum of id_j * V^(n-1-j)."""
    keys = np.zeros(len(ids) - n + 1, dtype=np.int64)
    for j in range(n):
        keys = keys * vocab + ids[j : len(ids) - n + 1 + j]
    return keys


def _discounts(counts: np.ndarray) -> np.ndarray:
    """Modified Kneser-Ney discounts D1, D2, D3+ from the count-of-counts."""
    n = [np.count_nonzero(counts == k) for k in (1, 2, 3, 4)]
    if min(n) == 0:
        return np.array([0.5, 1.0, 1.5])  # too little data for the estimate: conventional values
    y = n[0] / (n[0] + 2 * n[1])
    d = np.array([1 - 2 * y * n[1] / n[0], 2 - 3 * y * n[2] / n[1], 3 - 4 * y * n[3] / n[2]])
    return np.clip(d, 0.05, np.array([1.0, 2.0, 3.0]))


def _discount(table: dict[str, np.ndarray], counts: np.ndarray) -> np.ndarray:
    """Counts less their modified Kneser-Ney discount (D1, D2 or D3+ by the count; none for 0)."""
    discount = np.where(counts > 0, table["d"][np.clip(counts, 1, 3).astype(int) - 1], 0.0)
    return np.maximum(counts - discount, 0.0)


def _successors(table: dict[str, np.ndarray], rows: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, ...]:
    """For rows whose contexts are table entries `pos`: each seen successor's (row, context entry,
    index in the table's keys), the contexts' key ranges laid end to end."""
    lengths = table["start"][pos + 1] - table["start"][pos]
    first = table["start"][pos] - np.cumsum(lengths) + lengths  # where each range starts, less its place
    return np.repeat(rows, lengths), np.repeat(pos, lengths), np.repeat(first, lengths) + np.arange(lengths.sum())


class MarkovModel(nn.Module):
    carries_state = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.order, self.vocab = config.order, config.vocab_size
        if float(self.vocab) ** self.order >= 2**62:
            raise GentextError(f"--order {self.order} is too high for a vocabulary of {self.vocab} tokens")
        for n in range(1, self.order + 1):
            self.register_buffer(f"keys_{n}", torch.zeros(0, dtype=torch.int64))
            self.register_buffer(f"counts_{n}", torch.zeros(0, dtype=torch.int64))
        self._tables: list[dict[str, np.ndarray]] = []
        self._rows = StepRows(self)  # generation's kept rows (models/chainsteps.py)

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, ids: np.ndarray) -> MarkovModel:
        """Count n-grams of a token stream (highest order: raw counts; lower: continuation counts)."""
        ids = np.asarray(ids, dtype=np.int64)
        higher = None
        for n in range(self.order, 0, -1):
            if n == self.order:
                keys, counts = np.unique(_ngram_keys(ids, n, self.vocab), return_counts=True)
            else:  # distinct left extensions of each n-gram, from the (n+1)-gram keys
                keys, counts = np.unique(higher % self.vocab**n, return_counts=True)
            setattr(self, f"keys_{n}", torch.from_numpy(keys))
            setattr(self, f"counts_{n}", torch.from_numpy(counts.astype(np.int64)))
            higher = keys if n == self.order else np.unique(_ngram_keys(ids, n, self.vocab))
        self._prepare()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # The tables' sizes are only known from the file: take the tensors as they come.
        expected = {f"{kind}_{n}" for n in range(1, self.order + 1) for kind in ("keys", "counts")}
        missing, unexpected = sorted(expected - set(state_dict)), sorted(set(state_dict) - expected)
        if strict and (missing or unexpected):
            raise RuntimeError(f"Markov tables do not match: missing {missing}, unexpected {unexpected}")
        for name in expected & set(state_dict):
            setattr(self, name, state_dict[name].to(torch.int64).clone())
        self._prepare()
        return nn.modules.module._IncompatibleKeys(missing, unexpected)

    def _prepare(self) -> None:
        """Per order: sorted keys and counts, plus per-context totals and back-off weights."""
        self._tables, self._rows = [], StepRows(self)
        for n in range(1, self.order + 1):
            keys = getattr(self, f"keys_{n}").numpy()
            counts = getattr(self, f"counts_{n}").numpy().astype(np.float64)
            if len(keys) and np.any(np.diff(keys) <= 0):
                raise GentextError("model.safetensors: Markov keys are not sorted; the file is corrupt")
            d = _discounts(counts)
            prefix = keys // self.vocab
            ctx, start = np.unique(prefix, return_index=True)
            total = np.add.reduceat(counts, start) if len(start) else np.zeros(0)
            discount_mass = np.add.reduceat(d[np.minimum(counts, 3).astype(int) - 1], start) if len(start) else total
            self._tables.append(
                {
                    "keys": keys,
                    "counts": counts,
                    "d": d,
                    "ctx": ctx,
                    "total": total,
                    "gamma": discount_mass / total,
                    "start": np.append(start, len(keys)),
                }  # context i's successors: keys[start[i]:start[i + 1]]
            )

    # -- the model interface -------------------------------------------------------------------
    def _discounted(self, table, keys: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(table["keys"], keys), len(table["keys"]) - 1)
        return _discount(table, np.where(table["keys"][pos] == keys, table["counts"][pos], 0.0))

    # -- the state contract (models/state.py) ----------------------------------------------------
    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """No tokens yet: a context of -1s (B, order-1)."""
        if condition is not None:
            raise GentextError("this model was not trained with a condition")
        context = torch.full((batch, self.order - 1), -1, dtype=torch.long, device=device)
        return State({"context": context}, {"context": 0})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != {"context"}:
            raise GentextError(f"a Markov state has one tensor, context; got {sorted(tensors)}")
        return State(dict(tensors), {"context": 0})

    def _contexts(self, ids: torch.Tensor, state: State | None) -> tuple[np.ndarray, np.ndarray]:
        """(B*T, order-1) contexts of every position of ids (B, T), and the history (B, tail + T)."""
        batch, length = ids.shape
        tail = self.order - 1
        if state is None:
            state = self.initial_state(batch, ids.device)
        history = torch.cat([state.tensors["context"].to(ids.device).long(), ids], dim=1).cpu().numpy()
        if not tail:
            return np.zeros((batch * length, 0), dtype=np.int64), history
        # The context of position t is the `tail` ids ending at ids[:, t].
        windows = np.lib.stride_tricks.sliding_window_view(history[:, 1:], tail, axis=1)
        return windows.reshape(batch * length, tail), history

    def _new_state(self, history: np.ndarray, device) -> State:
        context = torch.from_numpy(history[:, history.shape[1] - (self.order - 1) :].copy()).to(device)
        return State({"context": context}, {"context": 0})

    def target_log_probs(
        self, ids: torch.Tensor, targets: torch.Tensor, state: State | None = None
    ) -> tuple[torch.Tensor, State]:
        """log P(targets | context) (B, T) without building full distributions: evaluation of a
        large vocabulary costs O(positions x order) lookups instead of O(positions x V)."""
        contexts, history = self._contexts(ids, state)
        words = targets.reshape(-1, 1).cpu().numpy().astype(np.int64)  # (P, 1)
        p = self._probabilities(contexts, words)[:, 0]
        logp = log_probs(p).reshape(targets.shape).to(ids.device)
        return logp, self._new_state(history, ids.device)

    def _probabilities(self, contexts: np.ndarray, words: np.ndarray) -> np.ndarray:
        """The interpolated recursion: contexts (P, order-1), candidate ids (P, K) -> P(word | context) (P, K)."""
        uni = self._tables[0]
        total = uni["total"][0] if len(uni["total"]) else 1.0
        gamma = uni["gamma"][0] if len(uni["gamma"]) else 1.0
        p = self._discounted(uni, words) / total + gamma / self.vocab
        for n in range(2, self.order + 1):
            table = self._tables[n - 1]
            found, pos, ctx_key = self._find_contexts(table, contexts, n)
            if len(found):
                discounted = self._discounted(table, ctx_key[found, None] * self.vocab + words[found])
                p[found] = discounted / table["total"][pos, None] + table["gamma"][pos, None] * p[found]
        return p

    def _find_contexts(self, table, contexts: np.ndarray, n: int):
        """Rows whose last n-1 ids form a context seen in the order-n table, with its index."""
        rows = len(contexts)
        ctx = contexts[:, contexts.shape[1] - (n - 1) :]
        ctx_key = np.zeros(rows, dtype=np.int64)
        for j in range(n - 1):
            ctx_key = ctx_key * self.vocab + np.maximum(ctx[:, j], 0)
        if len(table["ctx"]) == 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), ctx_key
        pos = np.minimum(np.searchsorted(table["ctx"], ctx_key), len(table["ctx"]) - 1)
        found = np.nonzero((ctx >= 0).all(axis=1) & (table["ctx"][pos] == ctx_key))[0]
        return found, pos[found], ctx_key

    def lowest_row(self) -> np.ndarray:
        """P(. | the empty context) (V,): the row every context backs off to last."""
        nothing = np.full((1, self.order - 1), -1, dtype=np.int64)
        return self._probabilities(nothing, np.arange(self.vocab, dtype=np.int64)[None])[0]

    def distribution(self, contexts: np.ndarray) -> np.ndarray:
        """contexts (P, order-1) ids, -1 where unknown -> probabilities (P, V): `_probabilities` over
        every word, in the same operations, so the same numbers. A context has seen few of the V
        words: each order scales the whole row by its back-off weight and adds the discounted counts
        of its seen successors alone, where looking every word up in every order's table cost a
        search per (position, word, order)."""
        p = np.repeat(self.lowest_row()[None], len(contexts), 0)
        for n in range(2, self.order + 1):
            table = self._tables[n - 1]
            found, pos, _ = self._find_contexts(table, contexts, n)
            if not len(found):
                continue
            scale = np.ones(len(p))
            scale[found] = table["gamma"][pos]
            p *= scale[:, None]  # by 1.0 where not found: exact, and in place rather than gathered
            rows, context, seen = _successors(table, found, pos)
            flat = rows * self.vocab + table["keys"][seen] % self.vocab  # each (row, word) once
            p.reshape(-1)[flat] += _discount(table, table["counts"][seen]) / table["total"][context]
        return p

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> log-probabilities (B, T, V) and the context tail (B, order-1); with
        `targets` (B, T), only their log-probabilities (B, T)."""
        if targets is not None:
            return self.target_log_probs(ids, targets, state)
        if ids.shape[1] == 1 and not torch.is_grad_enabled():
            return self._step(ids, state)
        batch, length = ids.shape
        contexts, history = self._contexts(ids, state)
        probs = self.distribution(contexts).reshape(batch, length, self.vocab)
        logits = log_probs(probs).to(ids.device)  # (B, T, V)
        return logits, self._new_state(history, ids.device)

    def _step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One token per row (generation): each context's row computed once and kept
        (models/chainsteps.py), since generated text revisits contexts all the time and a network
        mixed with this chain would otherwise spend most of each token here (models/mixture.py)."""
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        # the context the next token is read in: the last order-1 ids, which is also the new state
        context = torch.cat([state.tensors["context"].to(ids.device).long(), ids], dim=1)[:, 1:]
        logits = self._rows(context)[:, None].to(ids.device)  # (B, 1, V)
        return logits, State({"context": context}, {"context": 0})

    def compiled_rows(self):
        """The compiled kernels' rows of this chain (native/chain.h), or None without them."""
        return self._rows.compiled_rows()

    def num_parameters(self) -> int:
        """Stored n-grams (the Markov model's size)."""
        return sum(getattr(self, f"keys_{n}").numel() for n in range(1, self.order + 1))
