"""The settings of a training run, from what the caller gave: the config dataclasses filled in from
keyword overrides, a resumed run's stored settings (only the stopping ones may change), the kind a
condition implies, and the run directory made ready. `api.train` starts here.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from gentext import checkpoint, keywords
from gentext.conditions import condition_class, condition_for
from gentext.config import DEFAULT_WIDTH, CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.data.tokenizers import tokenizer_from_json
from gentext.errors import GentextError
from gentext.fields import flag_of
from gentext.models import REGISTRY
from gentext.runconfig import RunConfig
from gentext.training import distributed, finetune
from gentext.training.defaults import (
    LEARNING_RATE,
    WEIGHT_DECAY,
    auto_cache_window,
    auto_weight_average,
    width_is_chosen,
)

_CONFIG_CLASSES = (CorpusConfig, TokenizerConfig, ModelConfig, TrainConfig)


def _split_overrides(overrides: dict[str, Any]) -> dict[type, dict[str, Any]]:
    """Route keyword arguments such as `hidden_size=256` to the config dataclass that owns them."""
    routed: dict[type, dict[str, Any]] = {cls: {} for cls in _CONFIG_CLASSES}
    for key, value in overrides.items():
        owners = [cls for cls in _CONFIG_CLASSES if key in {f.name for f in dataclasses.fields(cls)}]
        if not owners:
            raise keywords.unknown_setting(
                key, [f.name for c in _CONFIG_CLASSES for f in dataclasses.fields(c)], "train()"
            )
        routed[owners[0]][key] = value
    return {cls: keywords.typed(cls, values, "train()") for cls, values in routed.items()}


RESUMABLE = ("steps", "epochs", "time_limit", "patience", "eval_every", "save_every", "device", "tensorboard")


def _resumable_flags() -> list[str]:
    return [flag_of(TrainConfig, name) for name in RESUMABLE]


def resume_configs(out: Path, paths: list[str] | None, overrides: dict[str, Any]):
    """The stored settings of a run, with the few that may change on resume (when to stop, where to run).
    Rank 0 reads the run directory; under torchrun the other ranks receive its files."""
    refused = sorted(set(overrides) - set(RESUMABLE))
    if refused:
        owners = {name: cls for cls in _CONFIG_CLASSES for name in (f.name for f in dataclasses.fields(cls))}
        named = ", ".join(flag_of(owners[name], name) if name in owners else name for name in refused)
        raise GentextError(
            f"--resume keeps the run's settings; cannot change {named} (only {', '.join(_resumable_flags())} may "
            "change; start a new run with --force to change the others)"
        )
    info = distributed.from_env()
    saved = distributed.from_main(lambda: json.dumps(checkpoint.read_config(out).to_json()).encode(), info)
    stored = RunConfig.from_json(json.loads(saved), str(out / checkpoint.CONFIG))
    corpus_cfg = dataclasses.replace(stored.corpus, paths=list(paths) if paths else stored.corpus.paths)
    tok_cfg, model_cfg = stored.tokenizer, stored.model
    train_cfg = dataclasses.replace(stored.train, **overrides)
    if train_cfg.weight_decay is None:  # saved before the choice was recorded: what it trained with
        train_cfg.weight_decay = WEIGHT_DECAY if train_cfg.optimizer == "adamw" else 0.0
    tok_bytes = distributed.from_main(lambda: (out / checkpoint.TOKENIZER).read_bytes(), info)
    tok = tokenizer_from_json(json.loads(tok_bytes.decode("utf-8")))
    return corpus_cfg, tok_cfg, model_cfg, train_cfg, tok


FINE_TUNING_LR = 1e-3  # --init-from's peak learning rate unless --lr is given (a new run's: 3e-3 or more)


def new_configs(paths, corpus, tokenizer, model, train, overrides):
    """The settings of a new run, and the run it fine-tunes (`init_from`), if any."""
    routed = _split_overrides(overrides)
    corpus_cfg = dataclasses.replace(corpus or CorpusConfig(), **routed[CorpusConfig])
    if paths is not None:
        corpus_cfg.paths = list(paths)
    tok_cfg = dataclasses.replace(tokenizer or TokenizerConfig(), **routed[TokenizerConfig])
    model_cfg = dataclasses.replace(model or ModelConfig(), **routed[ModelConfig])
    train_cfg = dataclasses.replace(train or TrainConfig(), **routed[TrainConfig])
    kind_given = "kind" in routed[ModelConfig] or (model is not None and model.kind != ModelConfig.kind)
    condition_for(corpus_cfg, [flag_of(TokenizerConfig, name) for name in routed[TokenizerConfig]])
    _kind_for_condition(corpus_cfg.condition, model_cfg, kind_given)
    origin = None
    if train_cfg.init_from:
        if routed[TokenizerConfig]:
            flags = ", ".join(flag_of(TokenizerConfig, name) for name in routed[TokenizerConfig])
            raise GentextError(f"--init-from keeps the tokenizer of {train_cfg.init_from}; drop {flags}")
        origin, tok_cfg, model_cfg = finetune.source_configs(train_cfg.init_from, routed[ModelConfig])
        if train is None and "learning_rate" not in routed[TrainConfig]:
            train_cfg.learning_rate = FINE_TUNING_LR
    measured = width_is_chosen(corpus_cfg.condition, tok_cfg.level, model_cfg, train_cfg)
    if model_cfg.hidden_size is None and not measured:
        model_cfg.hidden_size = DEFAULT_WIDTH
    if train_cfg.learning_rate is None and not measured:  # else chosen with the kind and width, given or not
        train_cfg.learning_rate = LEARNING_RATE
    if train_cfg.weight_average is None:
        train_cfg.weight_average = auto_weight_average(measured and train is None)
    if train_cfg.cache_window is None:
        train_cfg.cache_window = auto_cache_window(measured and train is None)
    if train_cfg.distill is None and not (measured and train is None):  # else chosen when the text is read
        train_cfg.distill = 0.0
    if train is None and "seq_len" not in routed[TrainConfig]:
        train_cfg.seq_len = _default_window(model_cfg, train_cfg.seq_len)
    return corpus_cfg, tok_cfg, model_cfg, train_cfg, origin


def _default_window(model_cfg: ModelConfig, seq_len: int) -> int:
    """The training window a kind declares (`default_window`: a Transformer's context, so every
    distance its cache holds at generation was trained), else --seq-len's default."""
    declared = getattr(REGISTRY.get(model_cfg.kind), "default_window", None)
    window = seq_len if declared is None else declared(model_cfg, seq_len)
    return window if window > 0 else seq_len  # a bad --context is refused by its own check, naming it


# conditions only one kind can take, as the kinds declare them (`condition`)
CONDITION_KINDS = {cls.condition: kind for kind, cls in REGISTRY.items() if getattr(cls, "condition", None)}


def _kind_for_condition(condition: str, model_cfg: ModelConfig, kind_given: bool) -> None:
    """Where only one kind takes a condition, the condition picks it; a kind that cannot take the
    condition (or needs one that is missing) is refused, naming what to type instead."""
    needed = CONDITION_KINDS.get(condition)
    if needed and not kind_given:
        model_cfg.kind = needed
    elif needed and model_cfg.kind != needed:
        raise GentextError(f"--condition {condition} trains --model {needed} only; drop --model {model_cfg.kind}")
    for cond, kind in CONDITION_KINDS.items():
        if model_cfg.kind == kind and condition != cond:
            shape = condition_class(cond).reads
            raise GentextError(f"--model {kind} needs --condition {cond} ({shape}); add --condition {cond}")
