"""Recurrent language model: embedding -> RNN/LSTM/GRU stack -> logits over the vocabulary.

    ids (B, T) -> embedding (B, T, E) -> recurrent layers (B, T, H) -> head (B, T, V)

The recurrent state (h for RNN/GRU, (h, c) for LSTM, each (num_layers, B, H)) is returned so that
callers carry it: the trainer from window to window, the sampler from token to token.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


class RNNLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = RNN_CLASSES[config.kind](
            config.embed_size,
            config.hidden_size,
            config.num_layers,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self._init_weights()
        if config.tie_weights:
            # Press & Wolf 2017: one matrix for input and output embeddings; fewer parameters,
            # lower perplexity, and a cheaper softmax layer to learn for big vocabularies.
            self.head.weight = self.embedding.weight

    def _init_weights(self) -> None:
        if self.config.tie_weights:
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if self.config.kind == "lstm":
            # Jozefowicz et al. 2015: a forget-gate bias of 1 lets gradients through early in training.
            hidden = self.config.hidden_size
            for name, param in self.rnn.named_parameters():
                if name.startswith("bias_hh"):
                    with torch.no_grad():
                        param[hidden : 2 * hidden].fill_(1.0)

    def forward(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the state after the last position."""
        x = self.drop(self.embedding(ids))  # (B, T, E)
        y, state = self.rnn(x, state)  # (B, T, H)
        return self.head(self.drop(y)), state  # (B, T, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
