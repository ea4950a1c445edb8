"""What an out-of-vocabulary word costs to spell: the piece that makes word-level bits per character
honest.

A word model predicts `<unk>` and is done; a character model must spell the word. Bits per character
compared across levels are only fair when the word model pays for the spelling too, so evaluation
charges each `<unk>` the word's log-probability under a character n-gram (the project's Kneser-Ney
chain, `markov.py`) fitted on the training text's word types: the vocabulary plus the rarer words
the vocabulary left out (`WordTokenizer.rare_words`). Types, not tokens: the words that turn up
unknown are rare ones, which resemble the training text's rare types more than its running text.

Each word is spelled from a run of boundary symbols (so the first letters are predicted from "start
of word", never from the previous word) and ends with one. A character the training words never
used is charged as a draw from all of Unicode (log 0x110000) on top of the chain's "other" symbol.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from gentext.config import ModelConfig
from gentext.models.markov import MarkovModel

ORDER = 5
BOUNDARY, OTHER = 0, 1  # ids 0 and 1; the letters follow
UNICODE_NATS = math.log(0x110000)


class SpellingModel:
    def __init__(self, words: Iterable[str], order: int = ORDER):
        assert order >= 2, "a spelling needs a context of at least the word's start"
        words = [w for w in dict.fromkeys(words) if w]
        letters = sorted({c for w in words for c in w})
        self.index = {c: i + 2 for i, c in enumerate(letters)}
        self.order = order
        self.chain = MarkovModel(ModelConfig(kind="markov", vocab_size=len(letters) + 2, order=order))
        self.chain.fit(np.concatenate([self._ids(w) for w in words]) if words else np.zeros(order, np.int64))

    def _ids(self, word: str) -> np.ndarray:
        letters = [self.index.get(c, OTHER) for c in word]
        return np.array([BOUNDARY] * (self.order - 1) + letters + [BOUNDARY], dtype=np.int64)

    def cost(self, words: list[str]) -> float:
        """Total nats of spelling `words`, each from the start of a word to its end."""
        if not words:
            return 0.0
        streams = [self._ids(w) for w in words]
        tail = self.order - 1
        # The context of each target s[p] (p >= tail) is s[p - tail : p].
        contexts = np.concatenate([np.lib.stride_tricks.sliding_window_view(s[:-1], tail) for s in streams])
        targets = np.concatenate([s[tail:] for s in streams])[:, None]
        nats = -np.log(self.chain._probabilities(contexts, targets)).sum()
        novel = sum(c not in self.index for w in words for c in w)
        return float(nats + novel * UNICODE_NATS)
