"""Sequence to sequence: a bidirectional GRU encoder and a GRU decoder with Luong attention.

    source (B, S) -> embedding -> bi-GRU -> memory (B, S, H)          (H/2 per direction)
    h0 = tanh(W_init . mean of memory over the source)               (the encoder's feature vector)
    per target token: h = GRU(embed(y_prev), h); a = softmax(h . W_a memory, masked)
                      out = tanh(W_c [h; a . memory]); logits = W_o out

Behind the one model interface: `forward(ids, None)` reads ids as `source SOURCE_END target...`
(the prompt gentext builds from `--source` and an optional start of the target), encodes the
source and runs the decoder over SOURCE_END and what follows it, so the last logits predict the next
target token. With a state, `forward` only steps the decoder. The state holds the decoder's `h`,
the encoder's `memory` and its projection `keys` and the source `mask`, all with the batch first,
so the sampler, beam search (State.select), stop rules, streaming and the server work unchanged.
Sources differ in length, so the state is not a fixed size per row: requests take the
thread-per-request path, not the continuous batch (`carries_state = False`).

Training reads pairs, not a stream (`training/pairs.py`): `pair_log_probs` scores padded targets
given padded sources with teacher forcing, and padding never counts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.state import State

BATCH_FIRST = {"h": 0, "memory": 0, "keys": 0, "mask": 0}


class AttentionDecoder(nn.Module):
    """A GRU decoder with Luong attention over a memory (B, S, H) that an encoder made from a
    condition: the part seq2seq and captioning share. Subclasses define `encode(condition)`."""

    carries_state = False  # rows of a batch never continue across training windows
    source_end_id: int | None = None  # the decoder's start token; set from the tokenizer

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        e, h, dropout = config.embed_size, config.hidden_size, config.dropout or 0.0
        self.embedding = nn.Embedding(config.vocab_size, e)
        self.init = nn.Linear(h, h)
        self.decoder = nn.GRUCell(e, h)
        self.attend = nn.Linear(h, h, bias=False)  # Luong's "general" score: h . W_a m
        self.combine = nn.Linear(2 * h, h)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(h, config.vocab_size)

    needs = "a condition"

    def encode(self, condition) -> State:
        raise NotImplementedError

    def split_prompt(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise GentextError(f"a {self.config.kind} model generates from {self.needs}")

    def _state(self, memory: torch.Tensor, mask: torch.Tensor) -> State:
        """The decoder's first state: h0 from the mean of the memory (the feature vector), and the
        memory with its attention keys."""
        pooled = (memory * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, H)
        h = torch.tanh(self.init(pooled))
        return State({"h": h, "memory": memory, "keys": self.attend(memory), "mask": mask}, dict(BATCH_FIRST))

    # -- the state contract (models/state.py) ----------------------------------------------------
    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """The decoder's state for `condition` (what `encode` takes)."""
        if condition is None:
            raise GentextError(f"a {self.config.kind} model generates from {self.needs}")
        return self.encode(condition)

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != set(BATCH_FIRST):
            raise GentextError(f"a {self.config.kind} state has tensors {sorted(BATCH_FIRST)}, got {sorted(tensors)}")
        return State(dict(tensors), dict(BATCH_FIRST))

    # -- decoding ---------------------------------------------------------------------------------
    def _decode(self, ids: torch.Tensor, state: State, keep_attention: bool = False):
        """ids (B, T) through the decoder from `state` -> logits (B, T, V), state, attention (B, T, S)."""
        t = state.tensors
        h, memory, keys, mask = t["h"], t["memory"], t["keys"], t["mask"]
        emb = self.drop(self.embedding(ids))
        outputs, weights = [], []
        for step in range(ids.shape[1]):
            h = self.decoder(emb[:, step], h)
            scores = torch.einsum("bh,bsh->bs", h, keys).masked_fill(~mask, float("-inf"))
            alpha = torch.softmax(scores, dim=-1)  # (B, S)
            context = torch.einsum("bs,bsh->bh", alpha, memory)
            outputs.append(torch.tanh(self.combine(torch.cat([h, context], dim=-1))))
            if keep_attention:
                weights.append(alpha)
        logits = self.head(self.drop(torch.stack(outputs, dim=1)))
        state = State({"h": h, "memory": memory, "keys": keys, "mask": mask}, dict(BATCH_FIRST))
        return logits, state, (torch.stack(weights, dim=1) if keep_attention else None)

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        if state is None:  # a prompt: encode its source, decode from SOURCE_END on
            source, ids = self.split_prompt(ids)
            state = self.encode((source, torch.tensor([source.shape[1]], device=source.device)))
        logits, state, _ = self._decode(ids, state)
        if targets is None:
            return logits, state
        logp = -F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
        return logp.view_as(targets), state

    def pair_log_probs(self, condition, decoder_in, decoder_out) -> torch.Tensor:
        """Teacher-forced log P(decoder_out | condition, decoder_in) per position (B, T) (padding
        included: the caller masks it)."""
        logits, _, _ = self._decode(decoder_in, self.encode(condition))
        return -F.cross_entropy(logits.float().flatten(0, 1), decoder_out.flatten(), reduction="none").view(
            decoder_out.shape
        )

    def attention(self, condition, decoder_in: torch.Tensor) -> torch.Tensor:
        """The attention weights (T, S) of one example, decoder inputs given (for the picture)."""
        return self._decode(decoder_in, self.encode(condition), keep_attention=True)[2][0]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class Seq2SeqModel(AttentionDecoder):
    needs = "--source"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        if config.hidden_size % 2:
            raise GentextError("--model seq2seq needs an even --hidden-size (half per encoder direction)")
        self.encoder = nn.GRU(config.embed_size, config.hidden_size // 2, batch_first=True, bidirectional=True)

    def encode(self, condition) -> State:
        """condition = source ids (B, S), 0-padded, and their lengths (B,)."""
        source, lengths = condition
        mask = torch.arange(source.shape[1], device=source.device)[None, :] < lengths[:, None]  # (B, S)
        packed = nn.utils.rnn.pack_padded_sequence(
            self.drop(self.embedding(source)), lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        memory, _ = self.encoder(packed)
        memory, _ = nn.utils.rnn.pad_packed_sequence(memory, batch_first=True, total_length=source.shape[1])
        return self._state(memory, mask)

    def split_prompt(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One prompt row `source SOURCE_END target...` -> source (1, S) and the decoder's input."""
        row = ids[0].tolist()
        if self.source_end_id is None or self.source_end_id not in row:
            raise GentextError("a seq2seq model generates from a source: give --source")
        cut = row.index(self.source_end_id)
        if cut == 0:
            raise GentextError("the source is empty")
        return ids[:, :cut], ids[:, cut:]
