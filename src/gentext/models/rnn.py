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

from gentext import native, threads
from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models import rnnstep
from gentext.models.adaptive import AdaptiveSoftmax
from gentext.models.priming import is_reading_prompt
from gentext.models.state import State
from gentext.models.stepops import StepOps
from gentext.models.weights import MATMULS

RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
Raw = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # what torch's recurrent modules take


class RNNLanguageModel(StepOps, nn.Module):
    carries_state = True  # training windows continue the rows of the last one (truncated BPTT)
    mixable = True  # mixed with a Kneser-Ney chain after training (training/mixing.py)

    @staticmethod
    def weights_per_token(config: ModelConfig) -> int:
        """What a training step multiplies by per token, roughly (gates x layers, and the head)."""
        gates, h = {"lstm": 4, "gru": 3, "rnn": 1}[config.kind], config.hidden_size
        return gates * h * (config.embed_size + h) + (config.num_layers - 1) * gates * h * 2 * h + h * config.vocab_size

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = RNN_CLASSES[config.kind](
            config.embed_size,
            config.hidden_size,
            config.num_layers,
            dropout=(config.dropout or 0.0) if config.num_layers > 1 else 0.0,
            batch_first=True,
        )
        self.drop = nn.Dropout(config.dropout or 0.0)  # None (chosen at training time) is 0 outside it
        if config.adaptive_cutoffs:
            self.head = AdaptiveSoftmax(config.hidden_size, config.vocab_size, config.adaptive_cutoffs)
        else:
            self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self._init_weights()
        self.fast_step = True  # generation takes the single-token path (see _step)
        self.weight_format, self.stepped_sequences = "fp32", False  # the step's matrices (models/weights.py)
        self.init_step_ops()
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
        names = self._names()
        # float32 whatever the autocast: the carried and saved state never drifts in bf16/fp16
        return State({n: t.float() for n, t in zip(names, parts, strict=True)}, dict.fromkeys(names, 1))

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
        inference = not self.training and not torch.is_grad_enabled()
        if self.fast_step and inference and targets is None and ids.shape[1] == 1:
            return self._step(ids[:, 0], state)
        if inference and self._steps_sequences():
            return self._stepped(ids, state, targets)
        y, state = self._sequence(ids, state)
        return (self._output(y) if targets is None else self._target_log_probs(y, targets)), state

    def _sequence(self, ids: torch.Tensor, state: State | None) -> tuple[torch.Tensor, State]:
        """The recurrent stack over a sequence: the last layer's outputs (B, T, H), after dropout."""
        self._forget_check()  # training (or anything between two runs of steps) may change the weights
        x = self.drop(self.embedding(ids))  # (B, T, E)
        hx = self._unwrap(state)
        if hx is not None and torch.is_autocast_enabled(x.device.type):
            # nn.LSTM/GRU need the state in the dtype autocast gives the input
            dtype = torch.get_autocast_dtype(x.device.type)
            hx = tuple(t.to(dtype) for t in hx) if isinstance(hx, tuple) else hx.to(dtype)
        y, raw = self.rnn(x, hx)  # (B, T, H)
        return self.drop(y), self._wrap(raw)

    def _target_log_probs(self, y: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if isinstance(self.head, AdaptiveSoftmax):
            return self.head.target_log_probs(y, targets)
        logits = self.head(y).float()
        return -F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none").view_as(targets)

    # -- what a neural cache reads (models/cache.py): forward split at the head ------------------
    def _on_step_path(self, length: int) -> bool:
        inference = not self.training and not torch.is_grad_enabled()
        return inference and (self._steps_sequences() or (self.fast_step and length == 1))

    def _steps_sequences(self) -> bool:
        """Sequences run token by token in the step's format where evaluation measures that format,
        and where generation reads a prompt in a format other than fp32: nn.LSTM re-lays its
        weights out on every call (oneDNN), several times a short prompt's steps, and the tokens
        after the prompt run in the step's format anyway."""
        return self.stepped_sequences or (self.weight_format != "fp32" and is_reading_prompt())

    def features(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """The outputs the head reads (B, T, H) and the state after them, by the path forward takes."""
        if not self._on_step_path(ids.shape[1]):
            return self._sequence(ids, state)
        if ids.shape[1] > 1:
            self._forget_check()
        outputs = []
        for t in range(ids.shape[1]):
            y, state = self._step(ids[:, t], state, features=True)
            outputs.append(y)
        return torch.cat(outputs, dim=1), state

    def readout(self, y: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """log P over the vocabulary (B, T, V) from `features`' outputs, or of `targets` (B, T)."""
        if self._on_step_path(y.shape[1]):  # the head in the step's weight format, after `features`' step
            logits = self._step_ops(run=True)["head"](y.flatten(0, 1)).view(*y.shape[:2], -1)
        elif targets is not None:
            return self._target_log_probs(y, targets)
        else:
            logits = self._output(y)
        logp = torch.log_softmax(logits.float(), dim=-1)
        return logp if targets is None else logp.gather(2, targets[..., None])[..., 0]

    def _output(self, y: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., H) -> logits (..., V); an adaptive softmax gives log-probabilities,
        which are logits too (softmax(log p) = p), so samplers need not know the difference."""
        return self.head.log_probs(y) if isinstance(self.head, AdaptiveSoftmax) else self.head(y)

    # -- the single-token path used by generation (models/rnnstep.py) ----------------------------
    def set_weight_format(self, name: str, evaluate: bool = False) -> None:
        """fp32 | bf16 | int8: how the step stores its matrices. With `evaluate`, sequences
        (evaluation, scoring) also run token by token in that format, so its loss is measured on
        the arithmetic generation uses; otherwise they take the float32 sequence kernel."""
        if name not in MATMULS:
            raise GentextError(f"unknown weight format {name!r}; known: {', '.join(MATMULS)}")
        self.weight_format, self.stepped_sequences = name, evaluate and name != "fp32"
        self._forget_check()

    def step_weights(self) -> tuple[torch.Tensor, ...]:
        """What the step's matrices are made from (models/stepops.py), without a module walk:
        nn.RNNBase keeps `_flat_weights` current when a weight is reassigned, and a linear head has
        just its two tensors."""
        head = (self.head.weight, self.head.bias) if isinstance(self.head, nn.Linear) else self.head.parameters()
        return (self.embedding.weight, *self.rnn._flat_weights, *head)

    def build_step_ops(self, fmt: str) -> dict:
        return rnnstep.build_ops(self, MATMULS[fmt])

    def _step(
        self, ids: torch.Tensor, state: State | None, fmt: str | None = None, features: bool = False
    ) -> tuple[torch.Tensor, State]:
        """One token per row: ids (B,) -> logits (B, 1, V), or with `features` the last layer's
        output (B, 1, H). Same numbers as forward, up to rounding (and the weight format's error;
        `fmt` overrides the current format)."""
        ops = self._step_ops(fmt, run=True)
        if state is None:
            state = self.initial_state(ids.shape[0], ids.device)
        kernel = rnnstep.compiled(self.config.kind, ops) if ids.device.type == "cpu" else None
        if kernel is not None:
            split = threads.spare_core(ids.shape[0])
            out, *hc = kernel(ids, state.tensors["h"], state.tensors.get("c"), features, split)
            if not features and not ops["native_head"]:
                out = ops["head"](out[:, 0])[:, None]
            return out, self._wrap(hc[0] if len(hc) == 1 else tuple(hc))
        x, h, c = rnnstep.step(self.config.kind, ops, ids, state.tensors["h"], state.tensors.get("c"))
        out = (x if features else ops["head"](x))[:, None]  # (B, 1, V) or (B, 1, H)
        return out, self._wrap(h if c is None else (h, c))

    def draw_ahead(self, logits, state: State, count: int, sampler, generator, end_id, read_last: bool):
        """Up to `count` plainly sampled tokens of a request's rows, drawn and read in one compiled
        call (`run_step`'s step): (ids: a list for one row, (count, B) for a batch, logits (B, V),
        state), or None where it is not here; the engine then steps token by token, to the same ids."""
        return native.run_ahead(self.run_step(), logits, state, count, sampler, generator, end_id, read_last)

    def run_step(self):
        """(the compiled step with its head, the state from what it carries: h[, c]) for runs of
        tokens drawn ahead (`draw_ahead`, a mixture's), or None where it is not here (nor where
        generation takes the sequence path: `fast_step` off)."""
        step = rnnstep._whole(self.config.kind, self._step_ops(run=True), self.embedding.weight.device)
        if step is None or not self.fast_step:
            return None
        return step, lambda *hc: self._wrap(hc[0] if len(hc) == 1 else hc)

    def _stepped(self, ids: torch.Tensor, state: State | None, targets: torch.Tensor | None):
        """forward() token by token through the step path: how evaluation measures a weight
        format other than fp32 on the arithmetic generation uses (in one compiled call where it is built)."""
        self._forget_check()
        state = state if state is not None else self.initial_state(ids.shape[0], ids.device)
        ran = rnnstep.read(self.config.kind, self._step_ops(run=True), ids, targets, state)
        if ran is not None:
            out, *hc = ran
            return out, self._wrap(hc[0] if len(hc) == 1 else tuple(hc))
        outputs = []
        for t in range(ids.shape[1]):
            logits, state = self._step(ids[:, t], state)
            if targets is not None:
                logits = torch.log_softmax(logits[:, 0].float(), -1).gather(1, targets[:, t, None])
            outputs.append(logits)
        return torch.cat(outputs, dim=1), state

    # -- ONNX export (export.py): the single step with the state as plain tensors ------------------
    def onnx_step(self, batch: int) -> OnnxStep:
        """ids (B,), h (and c) (layers, B, H) in -> logits (B, V), h_out (and c_out) out."""
        self._ops.clear()  # trace the layer-0 lookup table from the weights, not a cache
        if self.weight_format != "fp32":
            raise GentextError("ONNX export writes float32 weights; load the run with --weights fp32")
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
