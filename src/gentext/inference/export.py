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


def export_onnx(textmodel: TextModel, path: str | Path, weights: str = "fp32") -> Path:
    """Write a run's single-step network as ONNX (needs the `onnx` package). The model kind says
    what its step looks like (`onnx_step`); a kind without one cannot be exported. `weights="int8"`
    writes the graph with its matrices quantized per channel (onnxruntime's dynamic quantization,
    the ONNX counterpart of `--weights int8`)."""
    if weights not in ("fp32", "int8"):
        raise GentextError(f"export --weights must be fp32 or int8, got {weights!r}")
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
    if weights == "int8":
        _quantize(path)
    return path


def _quantize(path: Path) -> None:
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise GentextError("an int8 ONNX export needs onnxruntime: pip install 'gentext[onnx]'") from None
    fp32 = path.with_name(path.name + ".fp32.tmp")
    path.replace(fp32)
    try:
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        fp32.unlink(missing_ok=True)
