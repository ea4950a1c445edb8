"""Export the single-step network to ONNX: ids (B,) and state in -> logits (B, V) and state out.

    embedding -> recurrent cell(s) -> logits        (one token; the caller carries the state)

Inputs `ids` (int64, B), `h` (float, layers x B x H) and, for an LSTM, `c`; outputs `logits`,
`h_out` (and `c_out`). The batch dimension is dynamic. Run it with onnxruntime, feeding each
output state back in, to generate without PyTorch.
"""

from __future__ import annotations

from pathlib import Path

import torch

from gentext.errors import GentextError
from gentext.inference.textmodel import TextModel


def export_onnx(textmodel: TextModel, path: str | Path) -> Path:
    """Write a run's single-step network as ONNX (needs the `onnx` package). The model kind says
    what its step looks like (`onnx_step`); a kind without one cannot be exported."""
    model = textmodel.model
    if not callable(getattr(model, "onnx_step", None)):
        raise GentextError(
            f"a {model.config.kind} model has no network to export; ONNX export is for lstm/gru/rnn runs"
        )
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise GentextError("ONNX export needs the onnx package: pip install 'gentext[onnx]'") from None
    model.eval()
    step = model.onnx_step(batch=2)
    path = Path(path)
    with torch.no_grad():
        torch.onnx.export(
            step.module,
            step.inputs,
            str(path),
            input_names=step.input_names,
            output_names=step.output_names,
            dynamic_axes=step.batch_axes,
            opset_version=17,
            dynamo=False,
        )
    return path
