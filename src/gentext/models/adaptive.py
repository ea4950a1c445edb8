"""Adaptive softmax (Grave et al. 2017) over the same (V, H) output matrix as a plain softmax.

A word vocabulary is sorted by frequency, so the ids are cut at `cutoffs` into a head (the frequent
words, ~90% of running text) and tail clusters. The head softmax covers the head words plus one
entry per cluster; a tail word's probability is P(cluster) * P(word | cluster):

    ids:      [0 ........ c1) [c1 ...... c2) [c2 ........ V)
    head:     softmax over words 0..c1-1 and clusters 1, 2
    P(w):     head(w)                          if w < c1
              head(cluster k) * tail_k(w)      if w in cluster k

Training only evaluates the tail of the rows whose target lies in it, so at a 10k-33k vocabulary
the output layer costs a fraction of a full softmax. Unlike torch.nn.AdaptiveLogSoftmaxWithLoss,
the tails are full-width slices of one weight matrix, which can therefore be tied to the embedding
(Press & Wolf 2017) — on small corpora tying is worth more perplexity than tail projections save.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


class AdaptiveSoftmax(nn.Module):
    def __init__(self, in_features: int, vocab_size: int, cutoffs: list[int]):
        super().__init__()
        self.bounds = [0, *cutoffs, vocab_size]
        self.weight = nn.Parameter(torch.empty(vocab_size, in_features))
        self.bias = nn.Parameter(torch.zeros(vocab_size))
        self.cluster = nn.Linear(in_features, len(cutoffs))  # logits of the tail clusters in the head
        bound = 1 / math.sqrt(in_features)  # nn.Linear's default initialisation
        nn.init.uniform_(self.weight, -bound, bound)

    def _clusters(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of the shortlist, then of each tail cluster. One split rather than a slice
        per cluster: each slice's backward would write a zero-filled (V, H) gradient of its own."""
        sizes = [hi - lo for lo, hi in itertools.pairwise(self.bounds)]
        return list(zip(self.weight.split(sizes), self.bias.split(sizes), strict=True))

    @staticmethod
    def _softmax(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Log-softmax over one tail cluster's words: (N, cluster size)."""
        return torch.log_softmax(F.linear(x, weight, bias).float(), dim=-1)

    def _head(self, x: torch.Tensor, clusters) -> torch.Tensor:
        """(N, shortlist + clusters) log-probabilities."""
        logits = torch.cat([F.linear(x, *clusters[0]), self.cluster(x)], dim=-1)
        return torch.log_softmax(logits.float(), dim=-1)

    def log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """Every word's log-probability: x (..., H) -> (..., V). For generation and scoring."""
        flat = x.reshape(-1, x.shape[-1])
        clusters = self._clusters()
        head = self._head(flat, clusters)
        shortlist = self.bounds[1]
        parts = [head[:, :shortlist]]
        for k, (weight, bias) in enumerate(clusters[1:]):
            parts.append(head[:, shortlist + k, None] + self._softmax(flat, weight, bias))
        return torch.cat(parts, dim=-1).reshape(*x.shape[:-1], -1)

    def target_log_probs(self, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log P(target) only: x (..., H), targets (...) -> (...). Tails run on their own rows."""
        flat, t = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
        clusters = self._clusters()
        head = self._head(flat, clusters)
        shortlist = self.bounds[1]
        out = head.gather(1, t.clamp(max=shortlist - 1)[:, None])[:, 0]  # right for head words
        for k, (weight, bias) in enumerate(clusters[1:]):
            lo, hi = self.bounds[k + 1], self.bounds[k + 2]
            rows = ((t >= lo) & (t < hi)).nonzero()[:, 0]
            if rows.numel() == 0:
                continue
            word = self._softmax(flat[rows], weight, bias).gather(1, (t[rows] - lo)[:, None])[:, 0]
            out = out.index_copy(0, rows, head[rows, shortlist + k] + word)
        return out.reshape(targets.shape)
