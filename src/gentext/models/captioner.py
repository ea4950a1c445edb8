"""Image captioning: a small CNN encoder whose feature map the attention decoder reads.

    picture (B, 3, 64, 64) -> 3 strided convolutions -> feature map (B, H, 8, 8)
    memory = the 64 cells as a sequence (B, 64, H) + a learned embedding of each cell's place
    h0 = tanh(W_init . mean of the memory)                 (the picture's feature vector)
    then the decoder of models/seq2seq.py: GRU + Luong attention over the 64 cells

The CNN is trained with the decoder, from scratch (nothing is downloaded). The place embedding
lets attention tell left from right, which "a red circle left of a blue square" needs. Generation
starts from `initial_state(1, condition=picture)`; the sampler, beams and stop rules are the
same as for every kind.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentext.config import ModelConfig
from gentext.models.seq2seq import AttentionDecoder
from gentext.models.state import State

GRID = 8  # the feature map's side for 64-pixel pictures (three stride-2 convolutions)
GROUPS = 8  # group norm's channel groups (--image-norm group; fewer where H is not a multiple)


def _cnn(h: int, norm: str) -> nn.Sequential:
    """Three stride-2 3x3 convolutions to H channels (64 -> 8 pixels a side). `--image-norm group`
    follows each with group norm: per picture, so training under torchrun equals one process and a
    picture's features never depend on the rest of its batch (batch norm broke both). RESULTS.md
    has what it gains and costs; runs saved before the option read as "none", their CNN."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, h)):
        layers.append(nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=norm == "none"))
        layers += [nn.GroupNorm(math.gcd(GROUPS, c_out), c_out), nn.ReLU()] if norm == "group" else [nn.ReLU()]
    return nn.Sequential(*layers)


class CaptionModel(AttentionDecoder):
    needs = "an image"
    condition = "image"  # the one condition this kind takes, and the kind that condition trains

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        h = config.hidden_size
        if config.feature_size:  # features a vision model made (.npy): projected, no CNN of our own
            self.project = nn.Linear(config.feature_size, h)
            return
        self.cnn = _cnn(h, config.image_norm)
        self.place = nn.Parameter(torch.zeros(1, GRID * GRID, h))

    def encode(self, condition) -> State:
        """condition = pictures (B, 3, 64, 64) in [-1, 1], or precomputed features (B, D) / (B, S, D);
        or a pair (those, rows (B,)): each distinct picture once and which one each row reads, so a
        training batch holding several captions of a picture runs the CNN once for it."""
        if isinstance(condition, tuple):
            pictures, rows = condition
            return self.encode(pictures).select(rows)
        if self.config.feature_size:
            features = condition[:, None, :] if condition.dim() == 2 else condition
            memory = self.drop(torch.tanh(self.project(features)))  # (B, S, H): S = 1 for a vector
        else:
            features = self.cnn(condition)  # (B, H, 8, 8)
            memory = self.drop(features.flatten(2).transpose(1, 2) + self.place)  # (B, 64, H)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool, device=memory.device)
        return self._state(memory, mask)
