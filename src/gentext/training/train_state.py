"""Everything `--resume` needs, in one atomically written safetensors file (no pickle).

    train_state.safetensors
      model.*        the latest weights (model.safetensors holds the best ones)
      optim.<i>.*    AdamW moments and step counts, per parameter index
      state.<name>   the model state carried into the next window, all global rows, float32
                     (named by the model kind: h, c for an LSTM; see models/state.py)
      rng.torch[.r]  each rank's torch generator (dropout differs per rank), rng.cuda[.r] likewise
      rng.reset      the generator that draws which rows start a window cold (one for all ranks)
      metadata       JSON: step, tokens, schedule position, best validation, data hash, param
                     groups, the fp16 loss scaler

Restoring all of it makes a resumed run bitwise identical to one that was never stopped (CPU, fp32).
Runs written before the state contract stored the state as `hidden.<j>`; they still resume.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from gentext import checkpoint
from gentext.checkpoint import atomic_write
from gentext.errors import GentextError
from gentext.models.state import State

TRAIN_STATE = checkpoint.TRAIN_STATE


@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this process, for --time-limit
    best_val: float | None = None
    best_step: int = 0
    evals_since_best: int = 0
    lr_scale: float = 1.0  # halved by a non-finite step, recovers over RECOVERY_STEPS good ones
    bad_steps: int = 0  # non-finite steps in a row
    data_hash: str = ""


def save_train_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
    state: State | None,
    rng: dict[str, torch.Tensor],
    scaler: dict[str, Any] | None = None,
    average: nn.Module | None = None,
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in (average.state_dict() if average is not None else {}).items():
        tensors[f"average.{name}"] = tensor.detach().cpu().clone()  # the weights' moving average (averaging.py)
    for name, tensor in model.state_dict().items():
        tensors[f"model.{name}"] = tensor.detach().cpu().clone()  # clone: tied weights share memory
    optim = optimizer.state_dict()
    for index, param_state in optim["state"].items():
        for key, value in param_state.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().clone()
    if state is not None:
        for name, tensor in state.float().tensors.items():
            tensors[f"state.{name}"] = tensor.detach().cpu().contiguous()
    tensors.update({f"rng.{name}": value for name, value in rng.items()})
    metadata = {
        "progress": json.dumps(asdict(progress)),
        "param_groups": json.dumps(optim["param_groups"]),
        "scaler": json.dumps(scaler or {}),
    }
    atomic_write(
        Path(run_dir) / TRAIN_STATE, lambda tmp: safetensors.torch.save_file(tensors, str(tmp), metadata=metadata)
    )


def read_progress(run_dir: Path) -> Progress:
    """The progress record alone (cheap: reads only the file header)."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise GentextError(f"{run_dir}: nothing to resume (no {TRAIN_STATE}); start again with --force")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            return Progress(**json.loads((handle.metadata() or {})["progress"]))
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise GentextError(f"{path}: corrupt training state ({exc}); start again with --force") from None


def read_train_state(run_dir: Path) -> bytes:
    """The file's bytes (rank 0 reads them; under torchrun they are broadcast to the others)."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise GentextError(f"{run_dir}: nothing to resume (no {TRAIN_STATE}); start again with --force")
    return path.read_bytes()


def _parse(data: bytes, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__") or {}
        return safetensors.torch.load(data), metadata
    except (SafetensorError, UnicodeDecodeError, ValueError, AttributeError) as exc:
        raise GentextError(f"{what}: corrupt training state ({exc}); start again with --force") from None


def _legacy_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """`hidden.<j>` of a run written before the state contract: h, or h and c."""
    hidden = [tensors[f"hidden.{j}"] for j in range(sum(k.startswith("hidden.") for k in tensors))]
    return dict(zip(("h", "c"), hidden, strict=False)) if metadata.get("hidden_kind") != "none" else {}


@dataclass
class Restored:
    progress: Progress
    state: State | None
    rng: dict[str, torch.Tensor]  # rng.* tensors by their name after "rng."
    scaler: dict[str, Any]


def load_train_state(
    data: bytes, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device, what: str,
    average: nn.Module | None = None,
) -> Restored:  # fmt: skip
    """Restore model, optimizer and the weights' average in place from the bytes of
    train_state.safetensors."""
    tensors, metadata = _parse(data, what)
    try:
        progress = Progress(**json.loads(metadata["progress"]))
        param_groups = json.loads(metadata["param_groups"])
        scaler = json.loads(metadata.get("scaler", "{}"))
    except (KeyError, TypeError, ValueError) as exc:
        raise GentextError(f"{what}: corrupt training state ({exc}); start again with --force") from None
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise GentextError(f"{what}: does not match the model in config.json ({str(exc).splitlines()[0]})") from None
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value.to(device) if value.dim() > 0 else value
    optimizer.load_state_dict({"state": optim_state, "param_groups": param_groups})
    saved = {k[len("average.") :]: v.to(device) for k, v in tensors.items() if k.startswith("average.")}
    if average is not None and saved:
        average.load_state_dict(saved)
    named = {k[len("state.") :]: v.to(device) for k, v in tensors.items() if k.startswith("state.")}
    named = named or {k: v.to(device) for k, v in _legacy_state(tensors, metadata).items()}
    state = model.state_from_tensors(named) if named else None
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return Restored(progress, state, rng, scaler)
