"""Model registry. Every model kind has one interface:

    forward(ids: LongTensor (B, T), state: State | None) -> (logits: Tensor (B, T, V), state: State)
    forward(ids, state, targets=LongTensor (B, T)) -> (log P(targets): Tensor (B, T), state)
    initial_state(batch, device=None, condition=None) -> State    # where generation starts
    state_from_tensors({name: tensor}) -> State                     # train_state.safetensors
    carries_state: bool                                             # across training windows

and may declare traits the pipeline reads instead of the kind's name: `mixable` (a Kneser-Ney
chain is mixed in after training), `weights_per_token(config)` (a static estimate of a training
step's multiplies per token, for planning a time-limited run), `default_window(config, seq_len)`
(the training window when --seq-len is not given), `condition` (the one condition the kind takes,
which then picks it: "source", "image"). A kind with weight formats
(`set_weight_format(name, evaluate)`) also steps one token in a named format:
`_step(ids (B,), state, fmt) -> (logits (B, 1, V), state)`, which the format choice measures.
A kind with a compiled step may offer `draw_ahead(logits, state, count, sampler, generator,
end_id, read_last) -> (ids, logits, state) | None`: a lone row's plainly sampled tokens drawn and
read in one call (the engine's fast path; None: it steps token by token).

so that the trainer and the sampler never branch on the kind, and never look inside a state
(`models/state.py`). The targets form lets a model score without building (B, T, V)
distributions (an adaptive softmax, a Kneser-Ney table lookup). A model with a `fit(ids)` method
is fitted by counting instead of trained by gradient steps. Adding a kind is a class and a line
in `REGISTRY`.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from gentext.config import DEFAULT_WIDTH, ModelConfig
from gentext.errors import GentextError
from gentext.models.captioner import CaptionModel
from gentext.models.markov import MarkovModel
from gentext.models.mingru import MinGRULanguageModel
from gentext.models.pretrained import PretrainedLM
from gentext.models.rnn import RNNLanguageModel
from gentext.models.seq2seq import Seq2SeqModel
from gentext.models.state import State
from gentext.models.transformer import TransformerLanguageModel

__all__ = [
    "REGISTRY",
    "MarkovModel",
    "RNNLanguageModel",
    "State",
    "TransformerLanguageModel",
    "AUTO",
    "build_model",
    "check_kind",
    "model_device",
    "network",
]

# kind -> the class that builds it from a ModelConfig
REGISTRY: dict[str, type[nn.Module]] = {
    "lstm": RNNLanguageModel,
    "gru": RNNLanguageModel,
    "rnn": RNNLanguageModel,
    "mingru": MinGRULanguageModel,  # minGRU: trained in parallel over time, a fixed-size state (models/mingru.py)
    "transformer": TransformerLanguageModel,
    "markov": MarkovModel,
    "seq2seq": Seq2SeqModel,  # pairs (--condition source): an encoder and a decoder with attention
    "captioner": CaptionModel,  # pictures (--condition image): a CNN and the same decoder
    "pretrained": PretrainedLM,  # a Hugging Face causal LM (--init-from a model folder; the hf extra)
}


AUTO = "auto"  # --model's default: a kind chosen when training starts (training/defaults.auto_kind)


def check_kind(kind: str) -> type[nn.Module]:
    """The class of a registered kind, or an error listing the kinds."""
    if kind == AUTO:
        raise GentextError("--model auto is chosen when a training starts, from its text and budget")
    if kind not in REGISTRY:
        raise GentextError(f"--model must be one of {', '.join([AUTO, *REGISTRY])}, got {kind!r}")
    return REGISTRY[kind]


def build_model(config: ModelConfig) -> nn.Module:
    """The kind's model; a width left to choose (training chooses it first) is the default's."""
    if config.hidden_size is None:
        config = dataclasses.replace(config, hidden_size=DEFAULT_WIDTH)
    return check_kind(config.kind)(config)


def fitted_by_counting(model: nn.Module) -> bool:
    """A model fitted in one counting pass (`fit(ids)`), not trained by gradient steps."""
    return callable(getattr(model, "fit", None))


def network(model: nn.Module) -> nn.Module:
    """The network inside a model made of models (a mixture's, a neural cache's): what weight
    formats and ONNX export work on."""
    while isinstance(getattr(model, "net", None), nn.Module):
        model = model.net
    return model


def model_device(model: nn.Module) -> torch.device:
    """Where a model lives (a Markov model has buffers but no parameters)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def start_state(model: nn.Module, condition, device=None) -> State | None:
    """The one-row state a condition makes (None: no condition, the model's own start)."""
    if condition is None:
        return None
    return model.initial_state(1, device or model_device(model), condition=condition)
