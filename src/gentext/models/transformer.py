"""A causal Transformer decoder in the GPT-2 / nanoGPT family, behind the same contract as the RNNs.

    ids (B, T) -> embedding (B, T, H) -> [pre-LN attention, pre-LN GELU MLP] x layers -> LN -> head

Positions are rotary (RoPE, Su et al. 2021) rather than learned: attention scores then depend only
on how far apart two tokens are, so the KV cache can slide. Each query sees at most `context`
tokens (itself and the context-1 before it); the cache keeps the last context-1 keys and values,
so generation goes on past `context` tokens with no cliff and no re-encoding, and a full forward
pass over a long text (a banded causal mask) gives the same numbers as feeding it token by token.

The state is the KV cache, a `State` like any other (models/state.py):
    k<i>, v<i>   (B, heads, L, head_dim) for layer i, already rotated; batch dimension 0
    pos          (B,) the absolute position of the next token; batch dimension 0
Training uses independent windows (`carries_state = False`): with windows of `context` tokens every
distance the cache can hold has been trained.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.adaptive import AdaptiveSoftmax
from gentext.models.state import State


def rotation(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, D/2), float64, of positions (B, T) times the frequencies: made once per
    forward and shared by every layer's queries and keys (made per call they cost ~2 ms a token,
    issue 27). Angles are computed in float64: at position 10^6 a float32 angle is off by ~0.06 rad."""
    half = head_dim // 2
    freq = 10000.0 ** (-torch.arange(half, device=positions.device, dtype=torch.float64) / half)  # (D/2,)
    angles = positions.to(torch.float64)[..., None] * freq  # (B, T, D/2)
    return angles.cos()[:, None], angles.sin()[:, None]


def _rotary(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs of channels of x (B, heads, T, D) by the angles `rotation` made."""
    cos, sin = rot[0].to(x.dtype), rot[1].to(x.dtype)  # x's dtype (autocast's, in training)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def forward(self, x, rot, cache_k, cache_v, mask):
        """x (B, T, H); rot: `rotation` of the positions; cache (B, heads, L, D); mask None (plain
        causal) or (T, L+T) bool."""
        batch, length, hidden = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(hidden, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, D)
        q, k = _rotary(q, rot), _rotary(k, rot)
        k = torch.cat([cache_k.to(k.dtype), k], dim=2)
        v = torch.cat([cache_v.to(v.dtype), v], dim=2)
        drop = self.dropout if self.training else 0.0
        causal = mask is None and length > 1  # one query sees every cached key (the cache holds context-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal)
        y = y.transpose(1, 2).reshape(batch, length, hidden)
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, k, v


class TransformerLanguageModel(nn.Module):
    carries_state = False  # training windows are independent; generation carries the KV cache

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        if config.hidden_size % config.num_heads or (config.hidden_size // config.num_heads) % 2:
            raise GentextError(
                f"--hidden-size ({config.hidden_size}) must be --num-heads ({config.num_heads}) times an even number"
            )
        self.config = config
        hidden = config.hidden_size
        self.embedding = nn.Embedding(config.vocab_size, hidden)
        dropout = config.dropout or 0.0  # None (chosen at training time) is 0 outside it
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(hidden, config.num_heads, dropout) for _ in range(config.num_layers))
        self.ln_f = nn.LayerNorm(hidden)
        if config.adaptive_cutoffs:
            self.head = AdaptiveSoftmax(hidden, config.vocab_size, config.adaptive_cutoffs)
        else:
            self.head = nn.Linear(hidden, config.vocab_size, bias=False)
        self.apply(self._init)
        for block in self.blocks:  # GPT-2: residual projections scaled down by depth
            for linear in (block.proj, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * config.num_layers))
        self.head.weight = self.embedding.weight  # tied input/output embedding (Press & Wolf 2017)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    # -- the state contract -------------------------------------------------------------------------
    def _dims(self) -> dict[str, int]:
        return {"pos": 0, **{f"{kv}{i}": 0 for i in range(self.config.num_layers) for kv in "kv"}}

    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """An empty cache at position 0."""
        if condition is not None:
            raise GentextError("this model was not trained with a condition")
        device = device if device is not None else self.embedding.weight.device
        heads = self.config.num_heads
        empty = torch.zeros(batch, heads, 0, self.config.hidden_size // heads, device=device)
        tensors = {name: empty.clone() for name in self._dims() if name != "pos"}
        return State({"pos": torch.zeros(batch, dtype=torch.long, device=device), **tensors}, self._dims())

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != set(self._dims()):
            raise GentextError(f"a transformer state has tensors {sorted(self._dims())}, got {sorted(tensors)}")
        return State(dict(tensors), self._dims())

    # -- the model interface ----------------------------------------------------------------------
    def _mask(self, length: int, cached: int, device) -> torch.Tensor | None:
        """Query t (absolute index cached + t) sees keys j with cached + t - context < j <= cached + t."""
        if (cached == 0 and length <= self.config.context) or length == 1:
            return None  # plain causal, or one query seeing the whole cache: the fused kernels' fast path
        query = torch.arange(length, device=device)[:, None] + cached
        key = torch.arange(cached + length, device=device)[None, :]
        return (key <= query) & (key > query - self.config.context)  # (T, L + T)

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the cache after them; with `targets`, log P(targets) (B, T)."""
        batch, length = ids.shape
        state = state if state is not None else self.initial_state(batch, ids.device)
        cached = state.tensors["k0"].shape[2]
        positions = state.tensors["pos"][:, None] + torch.arange(length, device=ids.device)  # (B, T)
        mask = self._mask(length, cached, ids.device)
        x = self.drop(self.embedding(ids))  # (B, T, H)
        keep = self.config.context - 1  # what the next token may still see
        new = {"pos": state.tensors["pos"] + length}
        rot = rotation(positions, self.config.hidden_size // self.config.num_heads)
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, rot, state.tensors[f"k{i}"], state.tensors[f"v{i}"], mask)
            k, v = (k.detach(), v.detach()) if self.training else (k, v)  # windows are independent
            new[f"k{i}"], new[f"v{i}"] = k[:, :, -keep:].float(), v[:, :, -keep:].float()
        y = self.ln_f(x)
        new_state = State(new, self._dims())
        if targets is None:
            logits = self.head.log_probs(y) if isinstance(self.head, AdaptiveSoftmax) else self.head(y)
            return logits, new_state
        if isinstance(self.head, AdaptiveSoftmax):
            return self.head.target_log_probs(y, targets), new_state
        logits = self.head(y).float()
        return -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets), new_state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
