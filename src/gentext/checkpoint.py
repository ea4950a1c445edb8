"""A run directory is the checkpoint, and this module owns it: it names every file a run holds,
writes each atomically, and clears a run for `--force`.

    runs/NAME/
      config.json              {"format_version": 1, "model": {...}, "tokenizer": {...}, "train": {...}, ...}
                               (and "cache": the network's neural cache, models/cache.py, if any)
      tokenizer.json           the vocabulary
      model.safetensors        weights of the best validation step (never a pickle)
      markov.safetensors       the Kneser-Ney chain mixed with the network (models/mixture.py), if any
      metrics.jsonl            one JSON object per logged step / evaluation     (training/records.py)
      train_state.safetensors  what --resume needs, bit for bit                  (training/train_state.py)
      loss.png                 the loss curves                                   (training/records.py)
      model.onnx               `gentext export`                                  (inference/export.py)
      tensorboard/             --tensorboard's event files                       (training/records.py)

Every file is written to a temporary name, fsynced and renamed over the old one, so a crash or a
full disk leaves the previous good checkpoint in place. Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from gentext import claim
from gentext.config import FORMAT_VERSION, ModelConfig
from gentext.data.tokenizers import Tokenizer, tokenizer_from_json
from gentext.errors import GentextError
from gentext.models import build_model, pretrained
from gentext.runconfig import CacheRecord, MixRecord, RunConfig

CONFIG = "config.json"
TOKENIZER = "tokenizer.json"
WEIGHTS = "model.safetensors"
CHAIN = "markov.safetensors"
METRICS = "metrics.jsonl"
TRAIN_STATE = "train_state.safetensors"
PLOT = "loss.png"
ONNX = "model.onnx"
TENSORBOARD = "tensorboard"
# What a new run started with --force removes at once. The weights, config and tokenizer stay until
# the new run replaces each atomically, so a failed start still leaves a directory that loads.
RECORDS = (METRICS, TRAIN_STATE, PLOT, ONNX, CHAIN)


_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, write) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`; on failure the old file stays."""
    path = Path(path)
    kept = "; the previous version is intact" if path.exists() else ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise GentextError(f"could not write {path} ({exc.strerror}){kept}") from None
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; a run directory is shared like any file
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        cause = write_failure(exc)
        if cause is not None:
            raise GentextError(f"could not write {path} ({cause}){kept}") from None
        raise
    _fsync_dir(path.parent)


def write_failure(exc: BaseException) -> str | None:
    """What a failed write's exception says went wrong on the disk, or None if it was no I/O
    failure: an OSError's reason, or the operating system's error inside a library's own
    exception (safetensors reports a full disk as "... (os error 28)")."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    found = re.search(r"os error (\d+)", str(exc))
    if isinstance(exc, SafetensorError | RuntimeError) and found:
        return os.strerror(int(found.group(1)))
    return None


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))


def save_weights(run_dir: Path, model: nn.Module) -> None:
    # save_model (not save_file) handles tied weights: the shared matrix is stored once.
    atomic_write(Path(run_dir) / WEIGHTS, lambda tmp: safetensors.torch.save_model(model, str(tmp)))


def load_weights(run_dir: Path, model: nn.Module) -> None:
    """Load `model.safetensors` into an existing model (same config)."""
    safetensors.torch.load_model(model, str(Path(run_dir) / WEIGHTS), strict=True)


def save_run_files(run_dir: Path, config: RunConfig, tokenizer: Tokenizer) -> None:
    """Write config.json and tokenizer.json (the weights are written by `save_weights`)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / TOKENIZER, tokenizer.to_json())
    write_json(run_dir / CONFIG, config.to_json())


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash; the rest of the log is still useful
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GentextError(f"{path}: corrupt JSON ({exc})") from None


@dataclass
class LoadedRun:
    run_dir: Path
    config: RunConfig
    model_config: ModelConfig
    tokenizer: Tokenizer
    model: nn.Module


def read_config(run_dir: Path) -> RunConfig:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise GentextError(f"{run_dir}: no such run directory")
    missing = [name for name in (CONFIG, TOKENIZER, WEIGHTS) if not (run_dir / name).is_file()]
    if missing:
        raise GentextError(f"{run_dir}: incomplete run directory, missing {', '.join(missing)}")
    config = _read_json(run_dir / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("format_version"), int):
        raise GentextError(f"{run_dir / CONFIG}: not a gentext run config (no format_version)")
    if config["format_version"] > FORMAT_VERSION:
        raise GentextError(
            f"{run_dir}: written by a newer gentext (format_version {config['format_version']}, "
            f"this one reads up to {FORMAT_VERSION}); upgrade gentext"
        )
    return RunConfig.from_json(config, str(run_dir / CONFIG))


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", mix: bool = True) -> LoadedRun:
    """Load a run directory onto `device` (CPU by default, whatever device trained it), or a
    pretrained model: a Hugging Face folder, or an id in the local Hugging Face cache. A run that
    mixed its network with a neural cache and a Kneser-Ney chain loads as the mixture unless `mix`
    is False (training from it reads the network alone)."""
    name, run_dir = str(run_dir), Path(run_dir)
    if run_dir.is_dir() and pretrained.is_pretrained_folder(run_dir):
        return LoadedRun(*_pretrained(name, device))
    if not run_dir.exists():
        if pretrained.cached(name) is None:
            raise GentextError(pretrained.not_found(name))
        return LoadedRun(*_pretrained(name, device))
    with claim.reading(run_dir):  # never the files of two different saves
        return _load_saved(run_dir, device, mix)


def _load_saved(run_dir: Path, device, mix: bool) -> LoadedRun:
    config = read_config(run_dir)
    model_config = config.model
    model_config.validate()
    tokenizer = tokenizer_from_json(_read_json(run_dir / TOKENIZER))
    if tokenizer.vocab_size != model_config.vocab_size:
        raise GentextError(
            f"{run_dir}: tokenizer.json has {tokenizer.vocab_size} tokens but the model expects "
            f"{model_config.vocab_size}; the files do not belong together"
        )
    model = build_model(model_config)
    try:
        missing, unexpected = safetensors.torch.load_model(model, str(run_dir / WEIGHTS), strict=False)
    except (SafetensorError, OSError, ValueError) as exc:
        raise GentextError(f"{run_dir / WEIGHTS}: corrupt or truncated weights ({exc})") from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise GentextError(f"{run_dir / WEIGHTS}: weights do not match config.json ({first})") from None
    if missing or unexpected:
        raise GentextError(
            f"{run_dir / WEIGHTS}: weights do not match config.json "
            f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )
    if mix and config.cache is not None:
        model = _cached(run_dir, model, config.cache)
    if mix and config.mixture is not None:
        model = _mixed(run_dir, model, config.mixture)
    model.to(device).eval()
    return LoadedRun(run_dir, config, model_config, tokenizer, model)


def save_chain(run_dir: Path, chain: nn.Module) -> None:
    atomic_write(Path(run_dir) / CHAIN, lambda tmp: safetensors.torch.save_model(chain, str(tmp)))


def _mixed(run_dir: Path, net: nn.Module, spec: MixRecord) -> nn.Module:
    """The network of a run and its chain (config.json's "mixture": order, weight, and for a
    labelled run the number of labels)."""
    from gentext.models.mixture import MixtureModel, new_chain

    try:
        labels = int(spec.labels or 0)  # a labelled run: one chain per label, their marks in the file
        chain = new_chain(int(spec.order), net.config.vocab_size, [0] * labels if labels else None)
        chain.load_state_dict(safetensors.torch.load_file(str(run_dir / CHAIN)))
        return MixtureModel(net, chain, float(spec.weight))
    except (SafetensorError, OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise GentextError(f"{run_dir / CHAIN}: the run's Kneser-Ney chain cannot be read ({exc})") from None


def _cached(run_dir: Path, net: nn.Module, spec: CacheRecord) -> nn.Module:
    """The network with its neural cache (config.json's "cache": window, theta, weight, gate, similarity)."""
    from gentext.models.cache import CacheModel

    try:
        window, theta, weight, gate = int(spec.window), float(spec.theta), float(spec.weight), float(spec.gate)
    except (KeyError, TypeError, ValueError) as exc:
        raise GentextError(f'{run_dir}/config.json: unreadable "cache" ({exc!r})') from None
    fits = callable(getattr(net, "features", None)) and spec.similarity in ("cosine", "dot")
    if window <= 0 or not 0.0 <= weight <= 1.0 or not math.isfinite(theta) or not 0.0 <= gate <= 1.0 or not fits:
        shown = dataclasses.asdict(spec)
        raise GentextError(f'{run_dir}/config.json: "cache" {shown} does not fit this {net.config.kind} network')
    return CacheModel(net, window, theta, weight, gate, spec.similarity)


def _pretrained(name: str, device) -> tuple:
    model_config, tokenizer, model, config, folder = pretrained.load_folder(name, device)
    return folder, config, model_config, tokenizer, model


def prepare_run_dir(out: Path, force: bool) -> None:
    """Make `out` ready for a new run: created, or (with `force`) an old run's records cleared;
    anything else already there is refused, so --force never deletes what is not a run."""
    if not claim.is_empty(out):
        if not force:
            raise GentextError(
                f"{out} already exists and is not empty; pass --force to overwrite it, --resume to continue it, "
                "or choose another --out"
            )
        if not (out / CONFIG).exists():
            raise GentextError(f"{out} is not empty and is not a gentext run; refusing to overwrite it with --force")
        for name in RECORDS:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / TENSORBOARD, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
