"""The Python API; the CLI and the server are thin adapters over it.

import gentext
summary = gentext.train("runs/demo", paths=["book.txt"], steps=500, hidden_size=256)
model = gentext.load("runs/demo")
print(model.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1)[0])
print(model.evaluate(paths=["test.txt"]))
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, distributed, trainer
from .config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig, from_dict, to_dict
from .corpus import open_corpus
from .dataset import BPTTBatches
from .errors import GentextError
from .evaluation import evaluate
from .hardware import resolve_device
from .models import build_model
from .records import PLOT
from .textmodel import TextModel
from .tokencache import fingerprint_and_fit, token_data
from .tokenizers import fit_tokenizer, tokenizer_from_json
from .train_state import TRAIN_STATE, read_progress
from .trainer import FINAL_EVAL_TOKENS

logger = logging.getLogger(__name__)

_CONFIG_CLASSES = (CorpusConfig, TokenizerConfig, ModelConfig, TrainConfig)


def _split_overrides(overrides: dict[str, Any]) -> dict[type, dict[str, Any]]:
    """Route keyword arguments such as `hidden_size=256` to the config dataclass that owns them."""
    routed: dict[type, dict[str, Any]] = {cls: {} for cls in _CONFIG_CLASSES}
    for key, value in overrides.items():
        owners = [cls for cls in _CONFIG_CLASSES if key in {f.name for f in dataclasses.fields(cls)}]
        if not owners:
            raise GentextError(f"train() got an unknown setting {key!r}")
        routed[owners[0]][key] = value
    return routed


def prepare_out_dir(out: Path, force: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not force:
            raise GentextError(
                f"{out} already exists and is not empty; pass --force to overwrite it, --resume to continue it, "
                "or choose another --out"
            )
        if not (out / checkpoint.CONFIG).exists():
            raise GentextError(f"{out} is not empty and is not a gentext run; refusing to overwrite it with --force")
        # Replace the old run only now that the new one's input has been validated.
        for name in (checkpoint.METRICS, TRAIN_STATE, PLOT):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


RESUMABLE = ("steps", "epochs", "time_limit", "patience", "eval_every", "save_every", "device", "tensorboard")


def _resume_configs(out: Path, paths: list[str] | None, overrides: dict[str, Any]):
    """The stored settings of a run, with the few that may change on resume (when to stop, where to run)."""
    stored = checkpoint.read_config(out)
    refused = sorted(set(overrides) - set(RESUMABLE))
    if refused:
        raise GentextError(f"--resume keeps the run's settings; cannot change {', '.join(refused)}")
    corpus_data = {k: v for k, v in stored.get("corpus", {}).items() if k != "sources"}
    corpus_cfg = from_dict(CorpusConfig, corpus_data, "config.json 'corpus'")
    if paths:
        corpus_cfg.paths = list(paths)
    tok_cfg = from_dict(TokenizerConfig, stored.get("tokenizer"), "config.json 'tokenizer'")
    model_cfg = from_dict(ModelConfig, stored.get("model"), "config.json 'model'")
    train_cfg = dataclasses.replace(from_dict(TrainConfig, stored.get("train"), "config.json 'train'"), **overrides)
    tok = tokenizer_from_json(json.loads((out / checkpoint.TOKENIZER).read_text(encoding="utf-8")))
    return corpus_cfg, tok_cfg, model_cfg, train_cfg, tok


def train(
    out: str | Path,
    paths: list[str] | None = None,
    *,
    corpus: CorpusConfig | None = None,
    tokenizer: TokenizerConfig | None = None,
    model: ModelConfig | None = None,
    train: TrainConfig | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    on_eval: Callable[[int, float | None, TextModel], None] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a model on text and write a run directory to `out`; returns a summary dict.

    Settings come from the config dataclasses or as keyword overrides (`steps=500`, `hidden_size=256`).
    With no `paths` the built-in corpus is used. Nothing in `out` is touched until the input is valid.
    `resume=True` continues the run in `out` exactly where its last checkpoint left it; only the
    stopping settings (`steps`, `epochs`, `time_limit`, ...) may be given then.
    """
    out = Path(out)
    if resume:
        corpus_cfg, tok_cfg, model_cfg, train_cfg, tok = _resume_configs(out, paths, overrides)
    else:
        routed = _split_overrides(overrides)
        corpus_cfg = dataclasses.replace(corpus or CorpusConfig(), **routed[CorpusConfig])
        if paths is not None:
            corpus_cfg.paths = list(paths)
        tok_cfg = dataclasses.replace(tokenizer or TokenizerConfig(), **routed[TokenizerConfig])
        model_cfg = dataclasses.replace(model or ModelConfig(), **routed[ModelConfig])
        train_cfg = dataclasses.replace(train or TrainConfig(), **routed[TrainConfig])
    for cfg in (corpus_cfg, tok_cfg, train_cfg):
        cfg.validate()

    source = open_corpus(corpus_cfg)
    fit = None if resume else (lambda pieces: fit_tokenizer(tok_cfg, pieces))
    content, fitted = fingerprint_and_fit(source, corpus_cfg, fit)
    if not resume:
        tok = fitted
        if tok.vocab_size < 2:
            raise GentextError(
                f"the corpus has a single distinct token ({tok.decode([0])!r}); there is nothing to learn"
            )
        model_cfg.vocab_size = tok.vocab_size
    model_cfg.validate()
    data = token_data(source, corpus_cfg, tok, content, progress)
    train_ids, val_ids = data.train, data.val
    if train_ids is None:
        raise GentextError(f"the training text is empty ({', '.join(source.sources)})")
    if model_cfg.kind == "markov":
        if resume:
            raise GentextError("a Markov model is fitted in one pass; there is nothing to resume (retrain it)")
        if len(train_ids) < model_cfg.order:
            raise GentextError(f"the training text is too short for --order {model_cfg.order}")
    else:
        BPTTBatches(train_ids, train_cfg.batch_size, train_cfg.seq_len)  # a too-short corpus fails before any write

    if resume:
        if read_progress(out).data_hash != data.key:
            raise GentextError(f"{out}: the training text differs from the one this run started with; cannot resume")
    elif distributed.from_env().is_main:  # under torchrun only rank 0 touches the run directory
        prepare_out_dir(out, force)
    torch.manual_seed(train_cfg.seed)
    net = build_model(model_cfg)
    device = resolve_device(train_cfg.device)
    config = {
        "model": to_dict(model_cfg),
        "tokenizer": to_dict(tok_cfg),
        "train": to_dict(train_cfg),
        "corpus": {**to_dict(corpus_cfg), "sources": source.sources},
        "data": {"train_tokens": int(len(train_ids)), "val_tokens": int(0 if val_ids is None else len(val_ids))},
    }
    main = distributed.from_env().is_main
    if main:
        checkpoint.save_run_files(out, config, tok)

    def _on_eval(step: int, val_loss: float | None) -> None:
        if on_eval is not None:
            on_eval(step, val_loss, TextModel(net, tok, config, out))

    if model_cfg.kind == "markov":  # fitted by counting, not by gradient steps: the one branch on the kind
        result = _fit_markov(net, train_ids, val_ids, out)
    else:
        result = trainer.train(
            net, train_ids, val_ids, train_cfg, out, device, _on_eval, progress, resume=resume, data_hash=data.key
        )
    summary = {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "val_bpc": None,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "parameters": net.num_parameters(),
        "out": str(out),
    }
    if result.val_loss is not None and val_ids is not None:
        # bpc: nats over the characters of the predicted tokens (all but the first), / ln 2.
        if result.val_tokens == len(val_ids) - 1:  # the whole validation text
            chars = max(data.val_chars - len(tok.decode(val_ids[:1])), 1)
        else:  # a capped evaluation: the characters of the tokens it predicted
            chars = max(len(tok.decode(val_ids[1 : result.val_tokens + 1])), 1)
        summary["val_bpc"] = result.val_loss * result.val_tokens / chars / math.log(2)
    config["result"] = {k: v for k, v in summary.items() if k != "out"}
    if main:
        checkpoint.save_run_files(out, config, tok)
    return summary


def _fit_markov(net, train_ids: np.ndarray, val_ids: np.ndarray | None, out: Path) -> trainer.TrainResult:
    start = time.perf_counter()
    net.fit(train_ids)
    checkpoint.save_weights(out, net)
    val_loss, count = None, 0
    if val_ids is not None and len(val_ids) >= 2:
        nats, count = evaluate(net, val_ids, 256, torch.device("cpu"), max_tokens=FINAL_EVAL_TOKENS)
        val_loss = nats / count
        checkpoint.append_metrics(out, {"step": 0, "tokens": int(len(train_ids)), "val_loss": val_loss})
    seconds = time.perf_counter() - start
    return trainer.TrainResult(
        steps=0,
        tokens=int(len(train_ids)),
        seconds=seconds,
        train_loss=math.nan,
        val_loss=val_loss,
        best_step=0,
        tokens_per_second=len(train_ids) / max(seconds, 1e-9),
        stopped_early=False,
        val_tokens=count,
    )


def load(run_dir: str | Path, device: str = "cpu") -> TextModel:
    """Load a run directory (weights from safetensors, config and vocabulary from JSON)."""
    run = checkpoint.load_run(run_dir, resolve_device(device))
    return TextModel(run.model, run.tokenizer, run.config, run.run_dir)
