"""The Python API; the CLI and the server are thin adapters over it.

import gentext
summary = gentext.train("runs/demo", paths=["book.txt"], steps=500, hidden_size=256)
model = gentext.load("runs/demo")
print(model.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1)[0])
print(model.evaluate(paths=["test.txt"]))
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gentext import checkpoint, pipeline
from gentext.conditions import condition_of
from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.errors import GentextError
from gentext.hardware import resolve_device
from gentext.inference.textmodel import TextModel
from gentext.presets import PRESETS
from gentext.settings import new_configs, resume_configs
from gentext.threads import configure as configure_threads
from gentext.training import distributed
from gentext.useconfig import LoadConfig


def train(
    out: str | Path,
    paths: list[str] | None = None,
    *,
    corpus: CorpusConfig | None = None,
    tokenizer: TokenizerConfig | None = None,
    model: ModelConfig | str | None = None,
    train: TrainConfig | None = None,
    force: bool = False,
    resume: bool = False,
    progress: bool = False,
    on_eval: Callable[[int, float | None, TextModel], None] | None = None,
    threads: int | None = None,
    preset: str | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train a model on text and write a run directory to `out`; returns a summary dict.

    Settings come from the config dataclasses or as keyword overrides (`steps=500`, `hidden_size=256`);
    `model` is a ModelConfig or, as the CLI's --model, the kind's name; `preset` a documented recipe
    (gentext/presets.py) whose values the other keywords override.
    With no `paths` the built-in corpus is used. Nothing in `out` is touched until the input is valid.
    `resume=True` continues the run in `out` exactly where its last checkpoint left it; only the
    stopping settings (`steps`, `epochs`, `time_limit`, ...) may be given then. `threads` as
    RuntimeConfig.threads (default: chosen and adapted, gentext/threads.py).
    """
    configure_threads(threads)
    if preset is not None:  # a documented recipe's values, the keywords given winning (as --preset)
        if preset not in PRESETS:
            raise GentextError(f"unknown preset {preset!r}; known: {', '.join(sorted(PRESETS))}")
        overrides = {**PRESETS[preset], **overrides}
    if isinstance(model, str):  # `model="markov"`, as the CLI's --model
        model, overrides = None, {**overrides, "kind": model}
    out = Path(out)
    info = distributed.from_env()
    distributed.init(info)  # before anything is read: rank 0 may be the only one to see `out`
    origin = None  # the run being fine-tuned (--init-from)
    if resume:
        corpus_cfg, tok_cfg, model_cfg, train_cfg, tok = resume_configs(out, paths, overrides)
    else:
        corpus_cfg, tok_cfg, model_cfg, train_cfg, origin = new_configs(
            paths, corpus, tokenizer, model, train, overrides
        )
        tok = None
    summary = pipeline.run(
        out, info, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, origin,
        force=force, resume=resume, progress=progress, on_eval=on_eval,
    )  # fmt: skip
    return summary.as_dict()


def load(
    run_dir: str | Path,
    device: str = LoadConfig.device,
    weights: str = LoadConfig.weights,
    threads: int | None = None,
    network_only: bool = LoadConfig.network_only,
    prefix_cache_mb: int = LoadConfig.prefix_cache_mb,
) -> TextModel:
    """Load a run directory (weights from safetensors, config and vocabulary from JSON).
    `weights` is the generation step's format (LoadConfig.weights, TextModel.set_weights);
    `threads` as RuntimeConfig.threads; `network_only` drops a mixed run's cache and chain;
    `prefix_cache_mb` bounds the states kept after shared prompt prefixes (LoadConfig)."""
    configure_threads(threads)
    LoadConfig(device=device, weights=weights, network_only=network_only, prefix_cache_mb=prefix_cache_mb).validate()
    run = checkpoint.load_run(run_dir, resolve_device(device), mix=not network_only)
    condition = condition_of(run.config)
    model = TextModel(run.model, run.tokenizer, run.config, run.run_dir, prefix_cache_mb, condition=condition)
    model.set_weights(weights)
    return model
