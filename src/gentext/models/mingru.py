"""minGRU (Feng et al. 2024, "Were RNNs All We Needed?"): a recurrent network that trains in
parallel over time and generates with a fixed-size state.

A minGRU's gates read the input alone, never the previous state:

    z_t = sigmoid(W_z x_t)        h~_t = g(W_h x_t)        h_t = (1 - z_t) h_(t-1) + z_t h~_t

so h_t is a linear recurrence h_t = a_t h_(t-1) + b_t (a = 1 - z, b = z h~) whose coefficients
come from one matrix product over all B x T positions of a window: nearly all the arithmetic is
large products, not T small ones inside a sequential loop as an LSTM's W_hh h_(t-1) is, which is
what a CPU's cores want. What is left in time order is two elementwise operations per position,
run as a loop with its own backward (`LinearScan`): the paper's log-space parallel scan
(`logcumsumexp`, Heinsen 2023) is for GPUs, and on a 2-core CPU it was most of a training step
(benchmarks/RESULTS.md, "minGRU"). Generation takes one step at a time with h carried.

Each layer is a pre-norm residual block (as the paper's language models): x + minGRU(norm(x)),
then x + MLP(norm(x)) with a GELU expansion of `MLP` times; the embedding and the head share their
matrix. The state is h, (layers, B, H) — a few KB a row — carried across training windows as an
LSTM's is, so truncated back-propagation, --resume, torchrun, batching and serving need nothing of
their own. Weight formats apply to the step's products (the inputs are layer-normed, not bounded,
so int8 scales each row by itself, as the Transformer's does); ONNX export writes the step; a
neural cache reads `features` and `readout`, forward split at the head, as an LSTM's. The step
runs in the compiled kernels where they are built (gentext/native), to the same numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gentext import native
from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.rnn import OnnxStep
from gentext.models.state import State
from gentext.models.stepops import StepOps
from gentext.models.weights import MATMULS, Int8Matmul

MLP = 2  # the feed-forward expansion
FIRST_TABLE_IDS = 4096  # an int8 step reads its first layer's gates from a table of ids up to this vocabulary


def g(x: torch.Tensor) -> torch.Tensor:
    """The candidate's activation: positive everywhere, continuous, and linear above 0."""
    return torch.where(x >= 0, x + 0.5, torch.sigmoid(x))


class LinearScan(torch.autograd.Function):
    """h_t = a_t h_(t-1) + b_t over time (a, b: (B, T, H); h0: (B, H)) -> h (B, T, H), with the
    adjoint recurrence as its backward: lambda_t = grad_t + a_(t+1) lambda_(t+1); then
    d a_t = lambda_t h_(t-1), d b_t = lambda_t, d h0 = a_1 lambda_1."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor) -> torch.Tensor:
        h = torch.empty_like(b)
        prev = h0
        for t in range(b.shape[1]):
            prev = torch.addcmul(b[:, t], a[:, t], prev, out=h[:, t])
        ctx.save_for_backward(a, h, h0)
        return h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, h, h0 = ctx.saved_tensors
        lam = torch.empty_like(grad)
        nxt = torch.zeros_like(h0)
        for t in range(grad.shape[1] - 1, -1, -1):
            nxt = torch.addcmul(grad[:, t], a[:, t + 1], nxt, out=lam[:, t]) if t + 1 < grad.shape[1] else (
                lam[:, t].copy_(grad[:, t]))  # fmt: skip
        before = torch.cat([h0[:, None], h[:, :-1]], dim=1)
        return lam * before, lam, a[:, 0] * lam[:, 0]


class MinGRULayer(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gates = nn.Linear(width, 2 * width)  # z and the candidate h~
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, MLP * width), nn.GELU(), nn.Linear(MLP * width, width))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, h0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D), h0 (B, D) -> outputs (B, T, D), the last h (B, D)."""
        k, candidate = self.gates(self.norm(x)).float().chunk(2, dim=-1)
        z = torch.sigmoid(k)
        h = LinearScan.apply((1 - z).contiguous(), (z * g(candidate)).contiguous(), h0.float())
        x = x + self.drop(h.to(x.dtype))
        return x + self.drop(self.mlp(self.mlp_norm(x))), h[:, -1]

    def step(self, x: torch.Tensor, h: torch.Tensor, ops: dict, gates=None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token: x (B, D), h (B, D) -> output (B, D), new h, the products in `ops`' format;
        `gates`: this token's (z, h~) where a table holds them (`gate_values` of each id)."""
        z, candidate = gates if gates is not None else self.gate_values(x, ops)
        h = torch.lerp(h, candidate, z)  # (1 - z) h + z h~
        x = x + h
        return x + ops["down"](F.gelu(ops["up"](self.mlp_norm(x)))), h

    def gate_values(self, x: torch.Tensor, ops: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, D) -> the update gate z and the candidate h~ (B, D) each."""
        k, candidate = ops["gates"](self.norm(x)).chunk(2, dim=-1)
        return torch.sigmoid(k), g(candidate)


def _norm(norm: nn.LayerNorm) -> tuple:
    """A LayerNorm as the compiled step reads it."""
    return norm.weight, norm.bias, norm.eps


class MinGRULanguageModel(StepOps, nn.Module):
    carries_state = True  # training windows continue the rows of the last one, as an LSTM's do
    mixable = True  # mixed with a Kneser-Ney chain after training (training/mixing.py)

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        if config.adaptive_cutoffs:
            raise GentextError("--adaptive-softmax is for lstm/gru/rnn/transformer runs, not --model mingru")
        self.config = config
        width, dropout = config.hidden_size, config.dropout or 0.0
        self.embedding = nn.Embedding(config.vocab_size, width)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.ModuleList(MinGRULayer(width, dropout) for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, config.vocab_size, bias=False)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.head.weight = self.embedding.weight  # tied (Press & Wolf 2017)
        self.weight_format, self.stepped_sequences = "fp32", False
        self.init_step_ops()

    @staticmethod
    def weights_per_token(config: ModelConfig) -> int:
        """What a training step multiplies by per token, roughly (for the planned-passes estimate)."""
        h = config.hidden_size
        return config.num_layers * (2 * h * h + 2 * MLP * h * h) + h * config.vocab_size

    # -- the state contract -------------------------------------------------------------------------
    def initial_state(self, batch: int, device=None, condition=None) -> State:
        if condition is not None:
            raise GentextError("this model was not trained with a condition")
        device = device if device is not None else self.embedding.weight.device
        zeros = torch.zeros(self.config.num_layers, batch, self.config.hidden_size, device=device)
        return State({"h": zeros}, {"h": 1})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != {"h"}:
            raise GentextError(f"a mingru state has the tensor h, got {sorted(tensors)}")
        return State(dict(tensors), {"h": 1})

    def forward(self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """ids (B, T) -> logits (B, T, V) (or log P(targets) (B, T)) and the state after them."""
        if self._on_step_path(ids.shape[1]):
            return self._stepped(ids, self._state(ids, state), targets)
        y, state = self.features(ids, state)
        logits = self.head(y)
        out = logits if targets is None else -F.cross_entropy(
            logits.float().flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)  # fmt: skip
        return out, state

    # -- what a neural cache reads (models/cache.py): forward split at the head ---------------------
    def _on_step_path(self, length: int) -> bool:
        inference = not self.training and not torch.is_grad_enabled()
        return inference and (length == 1 or self.stepped_sequences)

    def _state(self, ids: torch.Tensor, state: State | None) -> State:
        return state if state is not None else self.initial_state(ids.shape[0], ids.device)

    def features(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """The outputs the head reads (B, T, H) and the state after them, by the path forward takes."""
        state = self._state(ids, state)
        if self._on_step_path(ids.shape[1]):
            return self._stepped(ids, state, None, features=True)
        self._forget_check()  # training (or anything between two runs of steps) may change the weights
        x, carried = self.drop(self.embedding(ids)), []
        for layer, h0 in zip(self.layers, state.tensors["h"].float(), strict=True):
            x, h = layer(x, h0)
            carried.append(h)
        return self.norm(x), State({"h": torch.stack(carried).float()}, {"h": 1})

    def readout(self, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """log P over the vocabulary (B, T, V) from `features`' outputs, or of `targets` (B, T)."""
        head = self._step_ops(run=True)["head"] if self._on_step_path(y.shape[1]) else self.head  # after `features`
        logp = torch.log_softmax(head(y.flatten(0, 1)).view(*y.shape[:2], -1).float(), dim=-1)
        return logp if targets is None else logp.gather(2, targets[..., None])[..., 0]

    def _step(self, ids: torch.Tensor, state: State | None, fmt: str | None = None) -> tuple[torch.Tensor, State]:
        """One token per row in a format (default: the current one): ids (B,) -> logits (B, 1, V)."""
        return self._stepped(ids[:, None], self._state(ids[:, None], state), None, fmt)

    def _stepped(self, ids: torch.Tensor, state: State, targets: torch.Tensor | None, fmt=None, features=False):
        """Token by token through the step (generation; evaluation in a named weight format): the
        logits, log P(targets) or, with `features`, the outputs the head reads. The compiled step
        (gentext/native) where it is built: the same numbers."""
        if ids.shape[1] > 1:
            self._forget_check()  # a sequence starts a new run of steps
        ops = self._step_ops(fmt, run=True)
        kernel = self._kernel(ops) if ids.device.type == "cpu" else None
        if kernel is not None:  # the whole sequence in one call
            out, h = native.kernels().read(kernel, ids, targets, state.tensors["h"], features)
            return out, State({"h": h}, {"h": 1})
        hs, outputs, first = list(state.tensors["h"]), [], ops["first"]
        for t in range(ids.shape[1]):
            x = self.embedding(ids[:, t])
            for i, layer in enumerate(self.layers):
                gates = None if i or first is None else (first[0][ids[:, t]], first[1][ids[:, t]])
                x, hs[i] = layer.step(x, hs[i], ops["layers"][i], gates)
            y = self.norm(x)
            out = y if features else ops["head"](y)
            if targets is not None:
                out = torch.log_softmax(out.float(), -1).gather(1, targets[:, t, None])[:, 0]
            outputs.append(out[:, None])
        return torch.cat(outputs, dim=1), State({"h": torch.stack(hs)}, {"h": 1})

    def _kernel(self, ops: dict):
        """The compiled step for these products (gentext/native's MinGruStep), made once per set of
        ops and only where the kernels are loaded and every product has one; else None."""
        kernels = native.kernels()
        if kernels is None:
            return None
        if "native" not in ops:
            specs = [[layer[name].native() for name in ("gates", "up", "down")] for layer in ops["layers"]]
            head = ops["head"].native()
            usable = head is not None and all(spec is not None for layer in specs for spec in layer)
            layers = [
                (_norm(m.norm), gates, _norm(m.mlp_norm), up, down)
                for m, (gates, up, down) in zip(self.layers, specs, strict=True)
            ]
            step, first = kernels.MinGruStep, ops["first"]
            ops["native"] = step(self.embedding.weight, layers, _norm(self.norm), head, first) if usable else None
        return ops["native"]

    def draw_ahead(self, logits, state: State, count: int, sampler, generator, end_id, read_last: bool):
        """Up to `count` plainly sampled (or greedy) tokens of a request's rows, drawn and read in
        one compiled call (inference/ahead.py): (ids: a list for one row, (count, B) for a batch,
        logits (B, V), state), or None without the kernels."""
        return native.run_ahead(self.run_step(), logits, state, count, sampler, generator, end_id, read_last)

    def run_step(self):
        """(the compiled step, the state from its h) for runs of tokens drawn ahead (`draw_ahead`, a
        mixture's), or None without the kernels."""
        kernel = self._kernel(self._step_ops(run=True)) if self.embedding.weight.device.type == "cpu" else None
        return None if kernel is None else (kernel, lambda h: State({"h": h}, {"h": 1}))

    # -- weight formats for the step (models/weights.py) ---------------------------------------------
    def set_weight_format(self, name: str, evaluate: bool = False) -> None:
        if name not in MATMULS:
            raise GentextError(f"unknown weight format {name!r}; known: {', '.join(MATMULS)}")
        self.weight_format, self.stepped_sequences = name, evaluate and name != "fp32"
        self._forget_check()

    def step_weights(self) -> tuple[torch.Tensor, ...]:
        """What the step's matrices are made from (models/stepops.py): the products' weights and the
        norms' (the compiled step holds them; the Python step reads them and the embedding live)."""
        linears = [linear for layer in self.layers for linear in (layer.gates, layer.mlp[0], layer.mlp[2])]
        norms = [norm for layer in self.layers for norm in (layer.norm, layer.mlp_norm)] + [self.norm]
        return (*(t for m in (*linears, *norms) for t in (m.weight, m.bias) if t is not None), self.head.weight)

    def build_step_ops(self, fmt: str) -> dict:
        make = MATMULS[fmt]
        layers = [
            {name: make(linear.weight, linear.bias, bounded=False)
             for name, linear in (("gates", layer.gates), ("up", layer.mlp[0]), ("down", layer.mlp[2]))}
            for layer in self.layers
        ]  # fmt: skip
        ops = {"layers": layers, "head": make(self.head.weight, None, bounded=False), "first": None}
        if isinstance(ops["layers"][0]["gates"], Int8Matmul) and self.config.vocab_size <= FIRST_TABLE_IDS:
            ops["first"] = self._first_gates(ops["layers"][0])
        return ops

    def _first_gates(self, ops: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The first layer's (z, h~) of every id, (V, D) each: its input is the id's embedding alone
        (as an LSTM's first product is a table). Each id takes a token's one-row calls, and an int8
        product's row is its own whatever shares the call: a row is what the step computed."""
        rows = [self.layers[0].gate_values(row[None], ops) for row in self.embedding.weight]
        return torch.cat([z for z, _ in rows]), torch.cat([candidate for _, candidate in rows])

    def onnx_step(self, batch: int) -> OnnxStep:
        """One token as a graph for ONNX export (inference/export.py): ids (B,), h (L, B, H) ->
        logits (B, V), h_out, in float32 whatever the weight format."""
        inputs = (torch.zeros(batch, dtype=torch.long), self.initial_state(batch).tensors["h"])
        axes = {"ids": {0: "batch"}, "logits": {0: "batch"}, "h": {1: "batch"}, "h_out": {1: "batch"}}
        return OnnxStep(_FloatStep(self), inputs, ["ids", "h"], ["logits", "h_out"], axes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class _FloatStep(nn.Module):
    def __init__(self, model: MinGRULanguageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor):
        x, carried = self.model.embedding(ids), []
        for layer, h0 in zip(self.model.layers, h, strict=True):
            x, new = layer.step(x, h0, {"gates": layer.gates, "up": layer.mlp[0], "down": layer.mlp[2]})
            carried.append(new)
        return self.model.head(self.model.norm(x)), torch.stack(carried)
