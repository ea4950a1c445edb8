"""The Python API; the CLI and the server are thin adapters over it.

import gentext
summary = gentext.train("runs/demo", paths=["book.txt"], steps=500, hidden_size=256)
model = gentext.load("runs/demo")
print(model.generate("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1)[0])
print(model.evaluate(paths=["test.txt"]))
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import checkpoint, distributed, generation, trainer
from .config import CorpusConfig, ModelConfig, SampleConfig, TokenizerConfig, TrainConfig, from_dict, to_dict
from .corpus import load_corpus, read_text
from .dataset import BPTTBatches, content_hash, id_dtype
from .errors import GentextError
from .evaluation import evaluate
from .hardware import resolve_device
from .models import build_model, model_device
from .novelty import novelty
from .records import PLOT
from .tokenizers import fit_tokenizer, tokenizer_from_json
from .train_state import TRAIN_STATE, read_progress

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


def _encode_ids(tokenizer, text: str) -> np.ndarray:
    return tokenizer.encode(text).astype(id_dtype(tokenizer.vocab_size))


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

    text = load_corpus(corpus_cfg)
    if not resume:
        tok = fit_tokenizer(tok_cfg, text.train, text.val)
        if tok.vocab_size < 2:
            raise GentextError(
                f"the corpus has a single distinct token ({tok.decode([0])!r}); there is nothing to learn"
            )
        model_cfg.vocab_size = tok.vocab_size
    model_cfg.validate()
    train_ids = _encode_ids(tok, text.train)
    val_ids = _encode_ids(tok, text.val) if text.val else None
    if model_cfg.kind == "markov":
        if resume:
            raise GentextError("a Markov model is fitted in one pass; there is nothing to resume (retrain it)")
        if len(train_ids) < model_cfg.order:
            raise GentextError(f"the training text is too short for --order {model_cfg.order}")
    else:
        BPTTBatches(train_ids, train_cfg.batch_size, train_cfg.seq_len)  # a too-short corpus fails before any write

    if resume:
        if read_progress(out).data_hash != content_hash(train_ids):
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
        "corpus": {**to_dict(corpus_cfg), "sources": text.sources},
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
        result = trainer.train(net, train_ids, val_ids, train_cfg, out, device, _on_eval, progress, resume=resume)
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
        chars = _characters(tok, text.val, val_ids)
        summary["val_bpc"] = result.val_loss * (len(val_ids) - 1) / chars / math.log(2)
    config["result"] = {k: v for k, v in summary.items() if k != "out"}
    if main:
        checkpoint.save_run_files(out, config, tok)
    return summary


def _fit_markov(net, train_ids: np.ndarray, val_ids: np.ndarray | None, out: Path) -> trainer.TrainResult:
    start = time.perf_counter()
    net.fit(train_ids)
    checkpoint.save_weights(out, net)
    val_loss = None
    if val_ids is not None and len(val_ids) >= 2:
        nats, count = evaluate(net, val_ids, 256, torch.device("cpu"))
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
    )


def _characters(tok, text: str, ids: np.ndarray) -> int:
    """Characters of `text` that evaluation predicts: all but those of the first token."""
    return max(len(text) - len(tok.decode(ids[:1])), 1)


class TextModel:
    """A trained model with its tokenizer: generate, stream, evaluate, describe."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: dict[str, Any], run_dir: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.run_dir = run_dir

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def _sample_config(self, overrides: dict[str, Any]) -> SampleConfig:
        cfg = from_dict(SampleConfig, overrides, "generate()")
        cfg.validate()
        return cfg

    def _prompt_ids(self, prompt: str) -> tuple[list[int], bool]:
        """Ids to prime the network with, and whether they are the prompt itself (vs. a start token)."""
        if prompt:
            unknown = getattr(self.tokenizer, "unknown_words", lambda _: [])(prompt)
            if unknown:
                shown = ", ".join(repr(w) for w in unknown[:10])
                logger.warning("prompt words outside the vocabulary are read as <unk>: %s", shown)
            return self.tokenizer.encode(prompt).tolist(), True
        # No prompt: prime with a newline (the start of a line), else with the first token.
        try:
            return self.tokenizer.encode("\n").tolist(), False
        except GentextError:
            return [0], False

    @property
    def end_id(self) -> int | None:
        """The end-of-text token (lines mode: the newline that ends every document), or None."""
        if self.config.get("corpus", {}).get("mode") != "lines":
            return None
        ids = self.tokenizer.encode("\n").tolist()
        return ids[0] if len(ids) == 1 else None

    @contextlib.contextmanager
    def _eval_mode(self):
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def generate(self, prompt: str = "", **settings: Any) -> list[str]:
        """`num_samples` texts (one batch), each starting with the prompt. Settings are SampleConfig fields."""
        cfg = self._sample_config(settings)
        ids, _ = self._prompt_ids(prompt)  # unknown characters fail before any work
        with self._eval_mode():
            return generation.generate_texts(self.model, self.tokenizer, prompt, ids, cfg, self.end_id)

    def stream(self, prompt: str = "", **settings: Any) -> Iterator[str]:
        """One sample as it is produced: the prompt, then each new piece of text."""
        cfg = self._sample_config({**settings, "num_samples": 1})
        ids, _ = self._prompt_ids(prompt)
        with self._eval_mode():
            yield from generation.stream_text(self.model, self.tokenizer, prompt, ids, cfg, self.end_id)

    def evaluate(self, paths: list[str] | None = None, text: str | None = None, seq_len: int = 256) -> dict[str, Any]:
        """Loss (nats/token), perplexity and bits per character on `text`, the files in `paths`,
        or (neither given) the validation split of the training corpus."""
        if text is None:
            text = read_text(paths) if paths else self._held_out_text()
        if not text:
            raise GentextError("nothing to evaluate: the text is empty")
        try:
            ids = self.tokenizer.encode(text)
        except GentextError as exc:
            raise GentextError(f"evaluation text: {exc}") from None
        if len(ids) < 2:
            raise GentextError("the evaluation text needs at least two tokens")
        nats, count = evaluate(self.model, ids, seq_len, self.device, batch_size=16)
        chars = _characters(self.tokenizer, text, ids)
        loss = nats / count
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bpc": nats / chars / math.log(2),
            "tokens": count,
            "characters": chars,
        }

    def score(self, text: str) -> dict[str, Any]:
        """Log-probability of `text`: each token given the ones before it, the first given the start
        (the same priming as an empty prompt). Totals in nats, plus per-token values."""
        if not text:
            raise GentextError("nothing to score: the text is empty")
        ids = self.tokenizer.encode(text).tolist()
        primer, _ = self._prompt_ids("")
        inputs = torch.tensor([primer + ids[:-1]], device=self.device)
        with self._eval_mode(), torch.inference_mode():
            logits, _ = self.model(inputs, None)  # (1, P + T - 1, V)
            logp = torch.log_softmax(logits[0, len(primer) - 1 :].float(), dim=-1)  # (T, V)
            token_logp = logp.gather(1, torch.tensor(ids, device=self.device)[:, None])[:, 0].tolist()
        total = sum(token_logp)
        loss = -total / len(ids)
        return {
            "log_prob": total,
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bpc": -total / len(text) / math.log(2),
            "tokens": len(ids),
            "characters": len(text),
            "per_token": [
                {"token": self.tokenizer.decode([i]), "log_prob": lp} for i, lp in zip(ids, token_logp, strict=True)
            ],
        }

    def _corpus(self):
        stored = dict(self.config.get("corpus", {}))
        stored.pop("sources", None)
        try:
            return load_corpus(from_dict(CorpusConfig, stored, "config.json 'corpus'"))
        except GentextError as exc:
            raise GentextError(f"cannot re-read the training corpus ({exc}); pass the text explicitly") from None

    def _held_out_text(self) -> str:
        return self._corpus().val

    def novelty(
        self, samples: int = 5, max_new_tokens: int = 500, span: int = 20, training_text: str | None = None, **settings
    ) -> dict[str, Any]:
        """Generate `samples` texts and measure how much is copied verbatim from the training text:
        the share of `span`-character windows found in it and the longest copied span."""
        training = training_text if training_text is not None else self._corpus().train
        texts = self.generate("", max_new_tokens=max_new_tokens, num_samples=samples, **settings)
        result = novelty(texts, training, span)
        return {
            "samples": samples,
            "span": span,
            "windows": result.windows,
            "copied_share": result.copied_share,
            "longest_copy": result.longest_copy,
            "longest_example": result.longest_example,
        }

    def generation_speed(self, max_new_tokens: int = 200, num_samples: int = 1) -> float:
        """Generated tokens per second (all samples together), sampling at temperature 1."""
        start = time.perf_counter()
        self.generate("", max_new_tokens=max_new_tokens, num_samples=num_samples, temperature=1.0, seed=0)
        return max_new_tokens * num_samples / (time.perf_counter() - start)

    def info(self) -> dict[str, Any]:
        metrics = checkpoint.read_metrics(self.run_dir) if self.run_dir else []
        evals = [m["val_loss"] for m in metrics if "val_loss" in m]
        return {
            "run": str(self.run_dir) if self.run_dir else None,
            "model": self.config.get("model"),
            "tokenizer": {"level": self.tokenizer.level, "vocab_size": self.tokenizer.vocab_size},
            "parameters": self.model.num_parameters(),
            "corpus": self.config.get("corpus", {}).get("sources"),
            "result": self.config.get("result"),
            "best_val_loss": min(evals) if evals else None,
            "evaluations": len(evals),
        }


def load(run_dir: str | Path, device: str = "cpu") -> TextModel:
    """Load a run directory (weights from safetensors, config and vocabulary from JSON)."""
    run = checkpoint.load_run(run_dir, resolve_device(device))
    return TextModel(run.model, run.tokenizer, run.config, run.run_dir)
