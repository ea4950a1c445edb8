"""Model registry. Every model kind has one interface:

    forward(ids: LongTensor (B, T), state | None) -> (logits: Tensor (B, T, V), state)
    forward(ids, state, targets=LongTensor (B, T)) -> (log P(targets): Tensor (B, T), state)

so that the trainer and the sampler never branch on the kind. The targets form lets a model score
without building (B, T, V) distributions (an adaptive softmax, a Kneser-Ney table lookup).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import ModelConfig
from .markov import MarkovModel
from .rnn import RNNLanguageModel

__all__ = ["MarkovModel", "RNNLanguageModel", "build_model", "map_state", "model_device"]


def build_model(config: ModelConfig) -> nn.Module:
    if config.kind == "markov":
        return MarkovModel(config)
    return RNNLanguageModel(config)


def model_device(model: nn.Module) -> torch.device:
    """Where a model lives (a Markov model has buffers but no parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def map_state(state: Any, fn) -> Any:
    """Apply `fn` to every tensor of a state (a tensor, or a tuple of tensors, or None)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return fn(state)
    return tuple(map_state(s, fn) for s in state)
