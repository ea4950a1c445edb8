"""Recurrent language model: embedding -> RNN/LSTM/GRU stack -> logits over the vocabulary.

    ids (B, T) -> embedding (B, T, E) -> recurrent layers (B, T, H) -> head (B, T, V)

The recurrent state (h for RNN/GRU, h and c for LSTM, each (num_layers, B, H), float32 whatever
the autocast) is returned as a `State` so that callers carry it without knowing its shape: the
trainer from window to window, the sampler from token to token.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.adaptive import AdaptiveSoftmax
from gentext.models.state import State

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
Raw = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # what torch's recurrent modules take


class RNNLanguageModel(nn.Module):
    carries_state = True  # training windows continue the rows of the last one (truncated BPTT)

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
        if config.adaptive_cutoffs:
            self.head = AdaptiveSoftmax(config.hidden_size, config.vocab_size, config.adaptive_cutoffs)
        else:
            self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self._init_weights()
        self.fast_step = True  # generation takes the single-token path (see _step)
        self._table: torch.Tensor | None = None
        self._table_version: tuple | None = None
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

    # -- the state contract (models/state.py) ----------------------------------------------------
    def _names(self) -> tuple[str, ...]:
        return ("h", "c") if self.config.kind == "lstm" else ("h",)

    def initial_state(self, batch: int, device=None, condition=None) -> State:
        """Zeros (layers, B, H) for each of h (and c): where generation and cold rows start."""
        if condition is not None:
            raise GentextError("this model was not trained with a condition")
        device = device if device is not None else self.embedding.weight.device
        zeros = torch.zeros(self.config.num_layers, batch, self.config.hidden_size, device=device)
        return State({name: zeros.clone() for name in self._names()}, {name: 1 for name in self._names()})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        if set(tensors) != set(self._names()):
            raise GentextError(f"a {self.config.kind} state has tensors {self._names()}, got {sorted(tensors)}")
        return State(dict(tensors), {name: 1 for name in tensors})

    def _wrap(self, raw: Raw) -> State:
        parts = raw if self.config.kind == "lstm" else (raw,)
        # float32 whatever the autocast: the carried and saved state never drifts in bf16/fp16
        return State({n: t.float() for n, t in zip(self._names(), parts, strict=True)}, dict.fromkeys(self._names(), 1))

    def _unwrap(self, state: State | None) -> Raw | None:
        if state is None:
            return None
        parts = tuple(state.tensors[name] for name in self._names())
        return parts if self.config.kind == "lstm" else parts[0]

    def forward(
        self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the state after the last position; with `targets`
        (B, T), their log-probabilities (B, T) instead, which an adaptive softmax computes cheaply."""
        single = targets is None and ids.shape[1] == 1
        if self.fast_step and single and not self.training and not torch.is_grad_enabled():
            return self._step(ids[:, 0], state)
        x = self.drop(self.embedding(ids))  # (B, T, E)
        hx = self._unwrap(state)
        if hx is not None and torch.is_autocast_enabled(x.device.type):
            # nn.LSTM/GRU need the state in the dtype autocast gives the input
            dtype = torch.get_autocast_dtype(x.device.type)
            hx = tuple(t.to(dtype) for t in hx) if isinstance(hx, tuple) else hx.to(dtype)
        y, raw = self.rnn(x, hx)  # (B, T, H)
        state = self._wrap(raw)
        y = self.drop(y)
        if targets is None:
            return self._output(y), state  # (B, T, V)
        if isinstance(self.head, AdaptiveSoftmax):
            return self.head.target_log_probs(y, targets), state
        logits = self.head(y).float()
        return -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets), state

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> logits (..., V); an adaptive softmax gives log-probabilities,
        which are logits too (softmax(log p) = p), so samplers need not know the difference."""
        return self.head.log_probs(y) if isinstance(self.head, AdaptiveSoftmax) else self.head(y)

    # -- the single-token path used by generation ------------------------------------------------
    # Calling nn.LSTM for one token re-dispatches the whole fused sequence kernel each time; a cell
    # step written as two matrix products per layer is several times faster, and for layer 0 the
    # input product is a lookup: embedding @ W_ih0^T + biases is precomputed as a (V, gates*H) table.

    def _layer0_table(self) -> torch.Tensor:
        rnn = self.rnn
        version = (
            self.embedding.weight._version,
            rnn.weight_ih_l0._version,
            rnn.bias_ih_l0._version,
            rnn.bias_hh_l0._version,
            self.embedding.weight.data_ptr(),
        )
        if self._table_version != version:
            bias = rnn.bias_ih_l0 + (rnn.bias_hh_l0 if self.config.kind != "gru" else 0)
            self._table = torch.addmm(bias, self.embedding.weight, rnn.weight_ih_l0.t())  # (V, G*H)
            self._table_version = version
        return self._table

    def _step(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """One token per row: ids (B,) -> logits (B, 1, V). Same numbers as forward, up to rounding."""
        cfg, rnn = self.config, self.rnn
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        h_all, c_all = state.tensors["h"], state.tensors.get("c")
        new_h, new_c = [], []
        x = None
        for layer in range(cfg.num_layers):
            h = h_all[layer]
            w_hh = getattr(rnn, f"weight_hh_l{layer}")
            if layer == 0:
                xw = self._layer0_table()[ids]  # (B, G*H), biases included
            else:
                w_ih, b_ih = getattr(rnn, f"weight_ih_l{layer}"), getattr(rnn, f"bias_ih_l{layer}")
                b = b_ih + getattr(rnn, f"bias_hh_l{layer}") if cfg.kind != "gru" else b_ih
                xw = torch.addmm(b, x, w_ih.t())
            if cfg.kind == "lstm":
                gates = torch.addmm(xw, h, w_hh.t())  # (B, 4H): i, f, g, o
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.sigmoid(f) * c_all[layer] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new_c.append(c)
            elif cfg.kind == "gru":
                hw = torch.addmm(getattr(rnn, f"bias_hh_l{layer}"), h, w_hh.t())  # (B, 3H): r, z, n
                xr, xz, xn = xw.chunk(3, dim=1)
                hr, hz, hn = hw.chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = torch.lerp(torch.tanh(xn + r * hn), h, z)  # (1 - z) * n + z * h
            else:
                h = torch.tanh(torch.addmm(xw, h, w_hh.t()))
            new_h.append(h)
            x = h
        logits = self._output(x)[:, None]  # (B, 1, V)
        h_out = torch.stack(new_h)
        return logits, self._wrap((h_out, torch.stack(new_c)) if cfg.kind == "lstm" else h_out)

    # -- ONNX export (export.py): the single step with the state as plain tensors ------------------
    def onnx_step(self, batch: int) -> OnnxStep:
        """ids (B,), h (and c) (layers, B, H) in -> logits (B, V), h_out (and c_out) out."""
        self._table_version = None  # trace the layer-0 lookup table from the weights, not a cache
        names = self._names()
        state = self.initial_state(batch, self.embedding.weight.device)
        inputs = (torch.zeros(batch, dtype=torch.long), *(state.tensors[n] for n in names))
        outputs = ["logits", *(f"{n}_out" for n in names)]
        axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
        axes.update({name: {1: "batch"} for name in [*names, *outputs[1:]]})
        return OnnxStep(_SingleStep(self), inputs, ["ids", *names], outputs, axes)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


@dataclass
class OnnxStep:
    module: nn.Module
    inputs: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    batch_axes: dict[str, dict[int, str]]


class _SingleStep(nn.Module):
    def __init__(self, model: RNNLanguageModel):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        tensors = {"h": h} if c is None else {"h": h, "c": c}
        logits, new_state = self.model._step(ids, self.model.state_from_tensors(tensors))
        return (logits[:, 0], *(new_state.tensors[name] for name in tensors))
