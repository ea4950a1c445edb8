"""Export the single-step network to ONNX: ids (B,) and state in -> logits (B, V) and state out.

    embedding -> recurrent cell(s) -> logits        (one token; the caller carries the state)

Inputs `ids` (int64, B), `h` (float, layers x B x H) and, for an LSTM, `c`; outputs `logits`,
`h_out` (and `c_out`). The batch dimension is dynamic. Run it with onnxruntime, feeding each
output state back in, to generate without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .errors import GentextError
from .textmodel import TextModel


class _SingleStep(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None):
        tensors = {"h": h} if c is None else {"h": h, "c": c}
        logits, new_state = self.model._step(ids, self.model.state_from_tensors(tensors))
        return (logits[:, 0], *(new_state.tensors[name] for name in tensors))


def export_onnx(textmodel: TextModel, path: str | Path) -> Path:
    """Write the single-step network of an RNN run as ONNX (needs the `onnx` package)."""
    model = textmodel.model
    config = model.config
    if config.kind == "markov":
        raise GentextError("a Markov model has no network to export; ONNX export is for lstm/gru/rnn runs")
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise GentextError("ONNX export needs the onnx package: pip install 'gentext[onnx]'") from None
    model.eval()
    batch = 2
    ids = torch.zeros(batch, dtype=torch.long)
    h = torch.zeros(config.num_layers, batch, config.hidden_size)
    lstm = config.kind == "lstm"
    inputs = (ids, h, torch.zeros_like(h)) if lstm else (ids, h)
    names_in = ["ids", "h", "c"] if lstm else ["ids", "h"]
    names_out = ["logits", "h_out", "c_out"] if lstm else ["logits", "h_out"]
    axes = {"ids": {0: "batch"}, "logits": {0: "batch"}}
    axes.update({name: {1: "batch"} for name in names_in[1:] + names_out[1:]})
    path = Path(path)
    with torch.no_grad():
        model._table_version = None  # trace the layer-0 lookup table from the weights, not a cache
        torch.onnx.export(
            _SingleStep(model),
            inputs,
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path
