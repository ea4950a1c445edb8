"""The plain PyTorch language-model loop a competent user writes: the baseline of
bench_quality.py, trained for the same minutes as gentext and scored the same way.

Characters: a 2-layer LSTM 512 wide, Adam 2e-3, batches of 32 x 128, the state carried. Words:
pytorch/examples' word_language_model (2 x 200 tied, dropout 0.2, SGD lr 20 divided by 4 when an
epoch does not improve validation, clip 0.25, 20 x 35).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Plain:
    """The plain loop's recipe."""

    level: str = "char"
    width: int = 512
    tied: bool = False
    dropout: float = 0.0
    sgd: bool = False  # SGD with annealing at epoch ends (word level), else Adam
    lr: float = 2e-3
    batch: int = 32
    window: int = 128


CHAR, WORD = Plain(), Plain("word", 200, True, 0.2, True, 20.0, 20, 35)


def tokens(text: str, level: str) -> list[str]:
    """Characters, or words with each line end a token (as gentext's whitespace tokenizer and
    word_language_model's <eos>)."""
    return list(text) if level == "char" else [w for line in text.split("\n") for w in (*line.split(), "\n")][:-1]


class PlainLSTM(nn.Module):
    def __init__(self, vocab: int, plain: Plain):
        super().__init__()
        self.embedding, self.drop = nn.Embedding(vocab, plain.width), nn.Dropout(plain.dropout)
        self.rnn = nn.LSTM(plain.width, plain.width, 2, dropout=plain.dropout)
        self.head = nn.Linear(plain.width, vocab)
        if plain.tied:  # word_language_model's init: uniform(-0.1, 0.1), zero output bias
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            nn.init.zeros_(self.head.bias)
            self.head.weight = self.embedding.weight

    def forward(self, x, state=None):
        y, state = self.rnn(self.drop(self.embedding(x)), state)
        return self.head(self.drop(y)), state


def stream_loss(model: PlainLSTM, ids: torch.Tensor, vocab: int) -> float:
    """Mean nats per predicted token of one stream, its state carried over windows of 1,000."""
    model.eval()
    nats, state = 0.0, None
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, 1000):
            x, y = ids[start : start + 1000], ids[start + 1 : start + 1001]
            logits, state = model(x[: len(y), None], state)
            nats += nn.functional.cross_entropy(logits.view(-1, vocab), y, reduction="sum").item()
    model.train()
    return nats / (len(ids) - 1)


def plain_loss(train: str, val: str, test: str, seconds: float, plain: Plain) -> float:
    """Train the plain loop for `seconds`, then its nats/token on the test text (unknown tokens skipped)."""
    vocab = sorted(set(tokens(train, plain.level)))
    index = {c: i for i, c in enumerate(vocab)}
    encode = lambda text: torch.tensor([index[c] for c in tokens(text, plain.level) if c in index])  # noqa: E731
    data, held = encode(train), encode(val)
    torch.manual_seed(0)
    model, lr, best = PlainLSTM(len(vocab), plain), plain.lr, math.inf
    opt = torch.optim.SGD(model.parameters(), lr=lr) if plain.sgd else torch.optim.Adam(model.parameters(), lr=lr)
    rows = data[: len(data) // plain.batch * plain.batch].view(plain.batch, -1).t()  # (T, B)
    state, pos, deadline = None, 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pos + plain.window + 1 > rows.shape[0]:
            state, pos = None, 0
            if plain.sgd:  # an epoch ends: anneal when validation did not improve (word_language_model)
                loss = stream_loss(model, held, len(vocab))
                lr = lr / 4 if loss >= best else lr
                opt.param_groups[0]["lr"], best = lr, min(best, loss)
        x, y = rows[pos : pos + plain.window], rows[pos + 1 : pos + plain.window + 1]
        logits, state = model(x, state)
        state = tuple(s.detach() for s in state)
        loss = nn.functional.cross_entropy(logits.view(-1, len(vocab)), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        pos += plain.window
    return stream_loss(model, encode(test), len(vocab))
