"""Everything `--resume` needs, in one atomically written safetensors file (no pickle).

    train_state.safetensors
      model.*        the latest weights (model.safetensors holds the best ones)
      optim.<i>.*    AdamW moments and step counts, per parameter index
      hidden.<j>     the recurrent state carried into the next window, all global rows
      rng.*          torch (and CUDA) generator states, for dropout
      metadata       JSON: step, tokens, schedule position, best validation, data hash, param groups

Restoring all of it makes a resumed run bitwise identical to one that was never stopped (CPU, fp32).
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

from .checkpoint import atomic_write
from .errors import GentextError

TRAIN_STATE = "train_state.safetensors"


@dataclass
class Progress:
    step: int = 0
    tokens: int = 0
    elapsed: float = 0.0  # training seconds before this process, for --time-limit
    best_val: float | None = None
    best_step: int = 0
    evals_since_best: int = 0
    lr_scale: float = 1.0
    data_hash: str = ""


def _flatten_state(state: Any) -> tuple[str, list[torch.Tensor]]:
    if state is None:
        return "none", []
    if isinstance(state, torch.Tensor):
        return "tensor", [state]
    return f"tuple:{len(state)}", list(state)


def _unflatten_state(kind: str, tensors: list[torch.Tensor]) -> Any:
    if kind == "none":
        return None
    if kind == "tensor":
        return tensors[0]
    return tuple(tensors)


def save_train_state(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress, hidden: Any
) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        tensors[f"model.{name}"] = tensor.detach().cpu().clone()  # clone: tied weights share memory
    optim = optimizer.state_dict()
    for index, param_state in optim["state"].items():
        for key, value in param_state.items():
            value = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            tensors[f"optim.{index}.{key}"] = value.detach().cpu().clone()
    hidden_kind, hidden_tensors = _flatten_state(hidden)
    for j, tensor in enumerate(hidden_tensors):
        tensors[f"hidden.{j}"] = tensor.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = rng
    metadata = {
        "progress": json.dumps(asdict(progress)),
        "param_groups": json.dumps(optim["param_groups"]),
        "hidden_kind": hidden_kind,
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


def load_train_state(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[Progress, Any]:
    """Restore model, optimizer and RNG in place; return the progress and the carried hidden state."""
    path = Path(run_dir) / TRAIN_STATE
    if not path.is_file():
        raise GentextError(f"{run_dir}: nothing to resume (no {TRAIN_STATE}); start again with --force")
    try:
        with safetensors.safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        progress = Progress(**json.loads(metadata["progress"]))
        param_groups = json.loads(metadata["param_groups"])
        hidden_kind = metadata["hidden_kind"]
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as exc:
        raise GentextError(f"{path}: corrupt training state ({exc}); start again with --force") from None

    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise GentextError(f"{path}: does not match the model in config.json ({str(exc).splitlines()[0]})") from None
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value.to(device) if value.dim() > 0 else value
    optimizer.load_state_dict({"state": optim_state, "param_groups": param_groups})
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(t for t in tensors if t.startswith("rng.cuda."))]
    if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
    hidden_tensors = [tensors[f"hidden.{j}"].to(device) for j in range(sum(k.startswith("hidden.") for k in tensors))]
    return progress, _unflatten_state(hidden_kind, hidden_tensors)
