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
from gentext.models.room import append, tail
from gentext.models.state import State
from gentext.models.stepops import StepOps
from gentext.models.weights import MATMULS


def rotation(positions: torch.Tensor, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (B, 1, T, D/2), float32, of positions (B, T) times the frequencies: made once per
    forward and shared by every layer's queries and keys (made per call, or cast per call, they were
    a large share of a token: RESULTS.md). Angles are computed in float64: at position 10^6 a float32
    angle is off by ~0.06 rad; their cosines and sines are then as exact in float32 as anything."""
    half = head_dim // 2
    freq = 10000.0 ** (-torch.arange(half, device=positions.device, dtype=torch.float64) / half)  # (D/2,)
    angles = positions.to(torch.float64)[..., None] * freq  # (B, T, D/2)
    return angles.cos().float()[:, None], angles.sin().float()[:, None]


def _rotary(x: torch.Tensor, rot: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs of channels of x (B, heads, T, D) by the angles `rotation` made."""
    cos, sin = rot[0].to(x.dtype), rot[1].to(x.dtype)  # x's dtype (autocast's, in training)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, room: int = 256):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.room = room  # positions an inference cache buffer leaves free to append to (models/room.py)
        self.ln1, self.ln2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = nn.Dropout(dropout)

    def linears(self) -> dict[str, nn.Linear]:
        return {"qkv": self.qkv, "proj": self.proj, "fc": self.mlp[0], "out": self.mlp[2]}

    def forward(self, x, rot, cache_k, cache_v, mask, ops: dict | None = None):
        """x (B, T, H); rot: `rotation` of the positions; cache (B, heads, L, D); mask None (plain
        causal) or (T, L+T) bool; `ops`: the four products in a weight format (models/weights.py)
        instead of the float32 modules, for inference."""
        batch, length, hidden = x.shape
        if ops is not None:
            return self._formatted(x, rot, cache_k, cache_v, mask, ops)
        q, k, v = self.qkv(self.ln1(x)).split(hidden, dim=-1)
        q, k, v = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))  # (B, h, T, D)
        q, k = _rotary(q, rot), _rotary(k, rot)
        k, v = append(cache_k, k, 2, self.room), append(cache_v, v, 2, self.room)
        drop = self.dropout if self.training else 0.0
        causal = mask is None and length > 1  # one query sees every cached key (the cache holds context-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal)
        y = y.transpose(1, 2).reshape(batch, length, hidden)
        x = x + self.drop(self.proj(y))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, k, v

    def _formatted(self, x, rot, cache_k, cache_v, mask, ops: dict):
        """forward's inference arithmetic with the products in `ops` (rows (B*T, K) in, float32 out);
        `rot` laid out for (B, T, 2, heads, D) queries and keys (TransformerLanguageModel._forward)."""
        batch, length, hidden = x.shape
        rows = x.reshape(batch * length, hidden)
        qkv = ops["qkv"](self.ln1(rows)).view(batch, length, 3, self.heads, -1)
        qk = _rotary(qkv[:, :, :2], rot)  # queries and keys rotated in one go: rot is (B, T, 1, 1, D/2)
        q, k, v = qk[:, :, 0].transpose(1, 2), qk[:, :, 1].transpose(1, 2), qkv[:, :, 2].transpose(1, 2)
        k, v = append(cache_k, k, 2, self.room), append(cache_v, v, 2, self.room)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and length > 1)
        rows = rows + ops["proj"](y.transpose(1, 2).reshape(batch * length, hidden))
        rows = rows + ops["out"](F.gelu(ops["fc"](self.ln2(rows))))
        return rows.view(batch, length, hidden), k, v


class TransformerLanguageModel(StepOps, nn.Module):
    carries_state = False  # training windows are independent; generation carries the KV cache
    mixable = True  # mixed with a Kneser-Ney chain after training (training/mixing.py)

    @staticmethod
    def default_window(config: ModelConfig, seq_len: int) -> int:
        """Windows as long as the context, so every distance the cache holds at generation was trained."""
        return config.context

    # `auto`'s quality check of a weight format (inference/formats.py) reads 512 positions; a step
    # costs about the same at nearly any batch, so 32 rows x 16 tokens instead of 4 x 128: a quarter
    # of the steps, and so of the load time, with the same positions checked
    format_check = {"rows": 32, "tokens": 16}

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
        layers = range(config.num_layers)
        self.blocks = nn.ModuleList(Block(hidden, config.num_heads, dropout, config.context) for _ in layers)
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
        self.weight_format, self.stepped_sequences = "fp32", False  # inference's products (models/weights.py)
        self.init_step_ops()

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

    # -- weight formats (models/weights.py), as the recurrent kinds have them ---------------------
    def set_weight_format(self, name: str, evaluate: bool = False) -> None:
        """fp32 | bf16 | int8: how inference stores the four products of each block (and a large
        head). One token at a time always uses it; with `evaluate`, whole sequences too (so
        evaluation measures the arithmetic generation uses), otherwise they stay float32."""
        if name not in MATMULS:
            raise GentextError(f"unknown weight format {name!r}; known: {', '.join(MATMULS)}")
        self.weight_format, self.stepped_sequences = name, evaluate and name != "fp32"

    def step_weights(self) -> tuple[torch.Tensor, ...]:
        """What the products are made from (models/stepops.py), read directly (walking
        Module.parameters() is slow); checked every token: a token's products cost far more."""
        params = [t for b in self.blocks for lin in b.linears().values() for t in (lin.weight, lin.bias)]
        return (*params, self.head.weight)

    def build_step_ops(self, fmt: str) -> dict:
        make = MATMULS[fmt]
        blocks = [
            {name: make(lin.weight, lin.bias, bounded=False) for name, lin in block.linears().items()}
            for block in self.blocks
        ]
        head = None if isinstance(self.head, AdaptiveSoftmax) else make(self.head.weight, None, bounded=False)
        return {"blocks": blocks, "head": head}

    def _step(self, ids: torch.Tensor, state: State | None, fmt: str | None = None) -> tuple[torch.Tensor, State]:
        """One token per row in a format: ids (B,) -> logits (B, 1, V) and the state after it."""
        return self._forward(ids[:, None], state, self._step_ops(fmt))

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
        # Inference steps (and sequences where a format is evaluated) take the products as ops: one
        # token's Python and dispatch cost most of its time, and the ops path has fewer of both.
        inference = not self.training and not torch.is_grad_enabled()
        if inference and (ids.shape[1] == 1 or self.stepped_sequences):
            logits, state = self._forward(ids, state, self._step_ops())
            if targets is None:
                return logits, state
            return torch.log_softmax(logits.float(), -1).gather(2, targets[..., None])[..., 0], state
        return self._forward(ids, state, None, targets)

    def _forward(self, ids: torch.Tensor, state: State | None, ops: dict | None, targets=None):
        """forward's work; `ops`: the products in a weight format (inference only)."""
        batch, length = ids.shape
        state = state if state is not None else self.initial_state(batch, ids.device)
        cached = state.tensors["k0"].shape[2]
        positions = state.tensors["pos"][:, None] + torch.arange(length, device=ids.device)  # (B, T)
        mask = self._mask(length, cached, ids.device)
        x = self.drop(self.embedding(ids))  # (B, T, H)
        keep = self.config.context - 1  # what the next token may still see
        new = {"pos": state.tensors["pos"] + length}
        rot = rotation(positions, self.config.hidden_size // self.config.num_heads)
        if ops is not None:  # (B, 1, T, D/2) -> (B, T, 1, 1, D/2), for Block._formatted's layout
            rot = tuple(r.transpose(1, 2)[:, :, :, None] for r in rot)
        for i, block in enumerate(self.blocks):
            block_ops = None if ops is None else ops["blocks"][i]
            x, k, v = block(x, rot, state.tensors[f"k{i}"], state.tensors[f"v{i}"], mask, block_ops)
            k, v = (k.detach(), v.detach()) if self.training else (k, v)  # windows are independent
            new[f"k{i}"], new[f"v{i}"] = tail(k, keep, 2).float(), tail(v, keep, 2).float()
        y = self.ln_f(x)
        new_state = State(new, self._dims())
        if ops is not None and ops["head"] is not None:
            return ops["head"](y.flatten(0, 1)).view(batch, length, -1), new_state
        if targets is None:
            logits = self.head.log_probs(y) if isinstance(self.head, AdaptiveSoftmax) else self.head(y)
            return logits, new_state
        if isinstance(self.head, AdaptiveSoftmax):
            return self.head.target_log_probs(y, targets), new_state
        logits = self.head(y).float()
        return -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets), new_state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
