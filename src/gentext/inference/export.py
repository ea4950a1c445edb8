"""Export the single-step network to ONNX: ids (B,) and state in -> logits (B, V) and state out.

    embedding -> recurrent cell(s) -> logits        (one token; the caller carries the state)

Inputs `ids` (int64, B), `h` (float, layers x B x H) and, for an LSTM, `c`; outputs `logits`,
`h_out` (and `c_out`). The batch dimension is dynamic. Run it with onnxruntime, feeding each
output state back in, to generate without PyTorch.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gentext.checkpoint import atomic_write
from gentext.errors import GentextError
from gentext.inference.textmodel import TextModel
from gentext.models import network

logger = logging.getLogger(__name__)

CHECK_ROWS, CHECK_STEPS = 16, 512  # the int8 check: 8k held-out tokens, a second or two


@dataclass
class Exported:
    path: Path
    check: dict[str, float] | None = None  # int8: {"fp32", "int8"} held-out nats/token in onnxruntime


def export_onnx(textmodel: TextModel, path: str | Path, weights: str = "fp32") -> Exported:
    """Write a run's single-step network as ONNX (needs the `onnx` package). The model kind says
    what its step looks like (`onnx_step`); a kind without one cannot be exported. `weights="int8"`
    writes the graph with its matrices quantized per channel (onnxruntime's dynamic quantization,
    the ONNX counterpart of `--weights int8`) and, where the run's held-out ids are in the token
    cache, reports both graphs' loss on them."""
    if weights not in ("fp32", "int8"):
        raise GentextError(f"export --weights must be fp32 or int8, got {weights!r}")
    model = textmodel.model
    if network(model) is not model:  # an ONNX step holds a network: not count tables, not a cache
        logger.warning("the run mixes its network with a chain or a cache; the ONNX step is the network alone")
        model = network(model)
    if not callable(getattr(model, "onnx_step", None)):
        raise GentextError(
            f"a {model.config.kind} model has no network to export; ONNX export is for lstm/gru/rnn/mingru runs"
        )
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise GentextError("ONNX export needs the onnx package: pip install 'gentext[onnx]'") from None
    model.eval()
    step = model.onnx_step(batch=2)
    check = _check_ids(textmodel) if weights == "int8" else None
    losses = {}

    def write(tmp: Path) -> None:  # into a temporary file renamed over `path`: a killed export leaves none
        with torch.no_grad():
            torch.onnx.export(
                step.module,
                step.inputs,
                str(tmp),
                input_names=step.input_names,
                output_names=step.output_names,
                dynamic_axes=step.batch_axes,
                opset_version=17,
                dynamo=False,
            )
        if weights == "int8":
            losses["int8"] = _quantize(tmp, check)

    path = Path(path)
    atomic_write(path, write)
    return Exported(path, losses.get("int8"))


def _check_ids(textmodel: TextModel) -> np.ndarray | None:
    """Up to CHECK_ROWS x CHECK_STEPS held-out ids to compare the int8 graph with float32 on."""
    held = textmodel.held_out_ids()
    if held is None:
        return None
    ids = np.asarray(held[0][: CHECK_ROWS * CHECK_STEPS], dtype=np.int64)
    usable = len(ids) // CHECK_ROWS * CHECK_ROWS
    return ids[:usable].reshape(CHECK_ROWS, -1) if usable >= 2 * CHECK_ROWS else None


def _quantize(path: Path, check: np.ndarray | None) -> dict[str, float] | None:
    """Quantize the graph's matrices in place; with held-out ids, return both graphs' held-out loss.

    reduce_range: 7-bit weights. onnxruntime multiplies uint8 activations by int8 weights with
    VPMADDUBSW on CPUs without VNNI (AVX2), which adds two products in int16 and saturates when
    they exceed it (255 * 127 * 2 > 32767), so the same file gave a worse model on AVX2 than on
    AVX-512 VNNI. With |w| <= 64 the pair stays below 32767 on every CPU: one file, one answer.
    """
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError:
        raise GentextError("an int8 ONNX export needs onnxruntime: pip install 'gentext[onnx]'") from None
    fp32 = path.with_name(path.name + ".fp32.tmp")
    path.replace(fp32)
    try:
        with _quiet_root_warnings():  # onnxruntime advises "pre-processing" through the root logger
            quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
        if check is None:
            return None
        return {"fp32": onnx_loss(fp32, check), "int8": onnx_loss(path, check)}
    finally:
        fp32.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet_root_warnings():
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def onnx_loss(path: str | Path, ids: np.ndarray) -> float:
    """Mean nats per token of an exported step graph reading `ids` (rows, T): each row a stream
    from a zero state, every next token scored (teacher forcing)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = session.get_inputs()[1:]  # the state, in the order the outputs return it
    rows, steps = ids.shape
    state = {i.name: np.zeros([d if isinstance(d, int) else rows for d in i.shape], np.float32) for i in inputs}
    nats = 0.0
    for t in range(steps - 1):
        logits, *new_state = session.run(None, {"ids": ids[:, t], **state})
        logits = logits.astype(np.float64)
        top = logits.max(axis=1, keepdims=True)
        logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        nats += float((logz - logits[np.arange(rows), ids[:, t + 1]]).sum())
        state = dict(zip(state, new_state, strict=True))
    return nats / (rows * (steps - 1))
