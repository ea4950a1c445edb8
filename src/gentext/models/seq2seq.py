"""Sequence to sequence: a bidirectional GRU encoder and a GRU decoder with Luong attention.

    source (B, S) -> embedding -> bi-GRU -> memory (B, S, H)          (H/2 per direction)
    h0 = tanh(W_init . mean of memory over the source)               (the encoder's feature vector)
    per target token: h = GRU(embed(y_prev), h); a = softmax(h . W_a memory / sqrt(H), masked)  (all at once)
                      out = tanh(W_c [h; a . memory]); logits = W_o out

On the one model contract: the source enters through `initial_state(batch, condition=source)`
(encode it, h0 from the memory), and `forward(ids, state)` steps the decoder from that state, the
first input being the decoder's start token (SOURCE_END). The state holds the decoder's `h`, the
encoder's `memory`, its projection `keys` and the source `mask`, all with the batch first; the
source length is a ragged dimension (`State.pad_dims`), so requests with sources of different
lengths join one continuous batch, padded positions masked out of attention. The sampler, beam
search, streaming, the server and the pair feed of the one training loop need nothing else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.state import State

BATCH_FIRST = {"h": 0, "memory": 0, "keys": 0, "mask": 0}
SOURCE_DIMS = {"memory": 1, "keys": 1, "mask": 1}  # ragged: padded with zeros (mask False) to join rows


class AttentionDecoder(nn.Module):
    """A GRU decoder with Luong attention over a memory (B, S, H) that an encoder made from a
    condition: the part seq2seq and captioning share. Subclasses define `encode(condition)`."""

    carries_state = False  # rows of a batch never continue across training windows

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        e, h, dropout = config.embed_size, config.hidden_size, config.dropout or 0.0
        self.embedding = nn.Embedding(config.vocab_size, e)
        self.init = nn.Linear(h, h)
        # One GRU call runs every target step: no input feeding (the attention output is not fed
        # back), so teacher-forced training needs no Python loop over the steps (a GRUCell stepped
        # per token trained measurably slower than a plain batched loop: RESULTS.md, bench_pairs.py).
        # Runs saved with the GRUCell load unchanged (_load_from_state_dict).
        self.decoder = nn.GRU(e, h, batch_first=True)
        self.attend = nn.Linear(h, h, bias=False)  # Luong's "general" score: h . W_a m
        self.scale = h**-0.5 if config.scaled_attention else 1.0  # config.py says why (keys carry it)
        self.combine = nn.Linear(2 * h, h)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(h, config.vocab_size)

    needs = "a condition"

    def encode(self, condition) -> State:
        raise NotImplementedError

    def _state(self, memory: torch.Tensor, mask: torch.Tensor) -> State:
        """The decoder's first state: h0 from the mean of the memory (the feature vector), and the
        memory with its attention keys."""
        pooled = (memory * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, H)
        h = torch.tanh(self.init(pooled))
        return _state(h, memory, self.attend(memory) * self.scale, mask)

    # -- the state contract (models/state.py) ----------------------------------------------------
    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """The decoder's state for `condition` (what `encode` takes)."""
        if condition is None:
            raise GentextError(f"a {self.config.kind} model generates from {self.needs}")
        return self.encode(condition)

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != set(BATCH_FIRST):
            raise GentextError(f"a {self.config.kind} state has tensors {sorted(BATCH_FIRST)}, got {sorted(tensors)}")
        return _state(**tensors)

    # -- decoding ---------------------------------------------------------------------------------
    def _decode(self, ids: torch.Tensor, state: State, keep_attention: bool = False):
        """ids (B, T) through the decoder from `state` -> logits (B, T, V), state, attention (B, T, S)."""
        t = state.tensors
        memory, keys, mask = t["memory"], t["keys"], t["mask"]
        hs, h = self.decoder(self.drop(self.embedding(ids)), t["h"][None].contiguous())  # (B, T, H), (1, B, H)
        scores = torch.einsum("bth,bsh->bts", hs, keys).masked_fill(~mask[:, None, :], float("-inf"))
        alpha = torch.softmax(scores, dim=-1)  # (B, T, S)
        context = torch.einsum("bts,bsh->bth", alpha, memory)
        outputs = torch.tanh(self.combine(torch.cat([hs, context], dim=-1)))
        logits = self.head(self.drop(outputs))
        return logits, _state(h[0], memory, keys, mask), (alpha if keep_attention else None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Runs saved before the decoder became an nn.GRU name its GRUCell's weights without "_l0".
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            old = f"{prefix}decoder.{name}"
            if old in state_dict:
                state_dict[f"{old}_l0"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        if state is None:  # the contract's cold start: there is none without a condition
            raise GentextError(f"a {self.config.kind} model generates from {self.needs}")
        logits, state, _ = self._decode(ids, state)
        if targets is None:
            return logits, state
        logp = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return logp.view_as(targets), state

    def attention(self, condition, decoder_in: torch.Tensor) -> torch.Tensor:
        """The attention weights (T, S) of one example, decoder inputs given (for the picture)."""
        return self._decode(decoder_in, self.encode(condition), keep_attention=True)[2][0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Seq2SeqModel(AttentionDecoder):
    needs = "--source"
    condition = "source"  # the one condition this kind takes, and the kind that condition trains

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.hidden_size % 2:
            raise GentextError("--model seq2seq needs an even --hidden-size (half per encoder direction)")
        self.encoder = nn.GRU(config.embed_size, config.hidden_size // 2, batch_first=True, bidirectional=True)

    def encode(self, condition) -> State:
        """condition = source ids (B, S), or 0-padded ids and their lengths (B,)."""
        source, lengths = condition if isinstance(condition, tuple) else (condition, None)
        if source.dim() != 2 or source.shape[1] == 0:
            raise GentextError("a seq2seq source is a non-empty batch of token ids (B, S)")
        if lengths is None:
            lengths = torch.full((source.shape[0],), source.shape[1], device=source.device)
        mask = torch.arange(source.shape[1], device=source.device)[None, :] < lengths[:, None]  # (B, S)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embedding(source)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        memory, _ = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(memory, batch_first=True, total_length=source.shape[1])
        return self._state(memory, mask)


def _state(h, memory, keys, mask) -> State:
    return State({"h": h, "memory": memory, "keys": keys, "mask": mask}, dict(BATCH_FIRST), dict(SOURCE_DIMS))
