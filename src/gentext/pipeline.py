"""The training pipeline behind `gentext.train` (api.py): prepare the data (read, tokenize, choose what the
text needs), build the model, fit it (by counting, or on the one training loop with the feed its
condition needs), finish (the chain and cache mixed in, the summary, config.json)."""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gentext import checkpoint, claim
from gentext.config import to_dict
from gentext.data.conditions import cut_pairs, pair_ids
from gentext.data.corpus import open_corpus
from gentext.data.dataset import BPTTBatches
from gentext.data.tokencache import fingerprint_and_fit, token_data
from gentext.data.tokenizers import fit_tokenizer
from gentext.errors import GentextError
from gentext.hardware import resolve_device, resolve_precision
from gentext.inference.conditioning import mark_ids
from gentext.inference.textmodel import TextModel
from gentext.models import AUTO, build_model, check_kind, fitted_by_counting
from gentext.models.scoring import evaluate
from gentext.training import captions, distributed, finetune, mixing, trainer
from gentext.training.defaults import auto_dropout, auto_kind
from gentext.training.feeds import FINAL_EVAL_TOKENS, PairFeed, WindowFeed
from gentext.training.records import tensorboard_writer


def run(
    out: Path, info, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, origin, *, force, resume, progress, on_eval
) -> dict[str, Any]:
    """Prepare the data, build the model, fit it and finish the run (mixing, the final config);
    `tok` is a resumed run's tokenizer, `origin` the run being fine-tuned. Returns the summary."""
    for cfg in (corpus_cfg, tok_cfg, train_cfg):
        cfg.validate()
    device = resolve_device(train_cfg.device)
    resolve_precision(train_cfg.precision, device)  # a precision this machine lacks fails before any write
    if train_cfg.tensorboard:
        tensorboard_writer()  # ... and so does a missing package
    if corpus_cfg.condition == "image":  # pictures and captions: read whole, every picture checked
        tok, data = captions.prepare(corpus_cfg, model_cfg, tok)
        config = captions.run_config(corpus_cfg, model_cfg, train_cfg)
    else:
        source, tok, data = prepare_data(corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress, origin)
        config = run_config(corpus_cfg, tok_cfg, model_cfg, train_cfg, source, data)
    torch.manual_seed(train_cfg.seed)
    net = build_model(model_cfg)
    added = finetune.init_weights(net, origin) if origin is not None else 0
    if resume and fitted_by_counting(net):
        raise GentextError(f"a {model_cfg.kind} model is fitted in one pass; there is nothing to resume (retrain it)")
    if origin is not None:
        config["init_from"] = {"run": str(origin.run_dir), "tokens_added": added}
    callback = None if on_eval is None else (lambda step, val: on_eval(step, val, TextModel(net, tok, config, out)))
    owned = claim.claimed(out, checkpoint.WEIGHTS) if info.is_main else contextlib.nullcontext()
    try:
        with owned:  # no other process writes this run meanwhile; a failed new run leaves no folder
            if info.is_main and not resume:  # under torchrun only rank 0 touches the run directory
                checkpoint.prepare_run_dir(out, force)  # --force clears a run only once it is ours
                checkpoint.save_run_files(out, config, tok)
            result = fit(net, tok, data, corpus_cfg.condition, train_cfg, out, device, callback, progress, resume)
            summary = finish(result, net, tok, data, out, config, origin, train_cfg, device)
        distributed.barrier(info)  # everyone leaves together, once rank 0 has written
    finally:
        distributed.teardown(info)
    return summary


def prepare_data(corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress: bool, origin=None):
    """Read and tokenize the corpus (fitting the tokenizer unless `tok` is given; growing the
    vocabulary of `origin`, a run being fine-tuned); check that the model can train on it before
    anything is written."""
    if model_cfg.kind != AUTO:
        check_kind(model_cfg.kind)  # an unknown --model fails before the corpus is read
    source = open_corpus(corpus_cfg)
    fit = None if tok is not None else (lambda pieces: fit_tokenizer(tok_cfg, pieces))
    if origin is not None and origin.model_config.kind == "pretrained":
        fit = lambda pieces: origin.tokenizer  # noqa: E731 -- a pretrained model keeps its own tokenizer whole
    elif origin is not None:
        fit = lambda pieces: origin.tokenizer.grown(fit_tokenizer(tok_cfg, pieces))  # noqa: E731
    content, fitted = fingerprint_and_fit(source, corpus_cfg, fit)
    if tok is None:
        tok = fitted
        if tok.vocab_size < 2:
            raise GentextError(
                f"the corpus has a single distinct token ({tok.decode([0])!r}); there is nothing to learn"
            )
        model_cfg.vocab_size = tok.vocab_size
    model_cfg.validate()
    data = token_data(source, corpus_cfg, tok, content, progress)
    if model_cfg.kind == AUTO and data.train is not None:  # not given: the kind that fits the text and budget
        model_cfg.kind = auto_kind(len(data.train), tok_cfg.level, model_cfg, train_cfg)
    if model_cfg.dropout is None and data.train is not None:  # not given: fit it to the corpus and budget
        counting = fitted_by_counting(check_kind(model_cfg.kind))
        model_cfg.dropout = 0.0 if counting else auto_dropout(len(data.train), model_cfg, train_cfg)
    if data.train is None:
        raise GentextError(f"the training text is empty ({', '.join(source.sources)})")
    if fitted_by_counting(check_kind(model_cfg.kind)):  # an n-gram count needs n tokens
        if len(data.train) < model_cfg.order:
            raise GentextError(f"the training text is too short for --order {model_cfg.order}")
    elif corpus_cfg.condition == "source":  # pairs are not cut into windows; none at all fails before any write
        source_end, end = pair_ids(tok)
        if not cut_pairs(data.train[: 1 << 20], end, source_end):
            raise GentextError("no source<TAB>target pairs in the training text")
    else:
        BPTTBatches(data.train, train_cfg.batch_size, train_cfg.seq_len)  # a too-short corpus fails before any write
    return source, tok, data


def fit(net, tok, data, condition: str, train_cfg, out: Path, device, callback, progress: bool, resume: bool):
    """Fit the model: by counting, or on the one training loop with the feed its data needs
    (training/feeds.py: windows of a stream, source/target pairs, or captioned pictures)."""
    if fitted_by_counting(net):  # counted, not trained by gradient steps
        return fit_by_counting(net, data.train, data.val, out, distributed.from_env().is_main)
    if condition == "image":
        make_feed = captions.feed(data, train_cfg)
    elif condition == "source":  # the stream holds `source SOURCE_END target END` documents
        ids = pair_ids(tok)
        train, val = (cut_pairs(part, ids[1], ids[0]) if part is not None else [] for part in (data.train, data.val))
        make_feed = lambda rows: PairFeed(train, val, ids, train_cfg, rows, key=data.key)  # noqa: E731
    else:
        make_feed = lambda rows: WindowFeed(data.train, data.val, train_cfg, rows, data.key)  # noqa: E731
    return trainer.train(net, make_feed, train_cfg, out, device, callback, progress, resume)


def finish(result, net, tok, data, out: Path, config: dict, origin, train_cfg, device) -> dict[str, Any]:
    """The summary (with what fine-tuning cost on the origin's text) and, on rank 0, the final
    config.json with the result."""
    main = distributed.from_env().is_main
    summary = summary_of(result, net, tok, data if hasattr(data, "val_chars") else captions.NO_STREAM, out)
    config.pop("mixture", None), config.pop("cache", None)
    with claim.saving(out) if main else contextlib.nullcontext():  # the chain and the config as one save
        if main and hasattr(data, "val_chars"):
            marks = mark_ids(tok, len(config["labels"])) if config["corpus"]["condition"] == "label" else None
            mixing.mix_after_training(net, marks, data, config, train_cfg, out, device, summary)
        if origin is not None and main:
            forgot = finetune.forgetting(net, origin, train_cfg.seq_len, device)
            summary["init_from"] = {**config["init_from"], **forgot}
        config["result"] = {k: v for k, v in summary.items() if k != "out"}
        if main:
            checkpoint.save_run_files(out, config, tok)
    return summary


def run_config(corpus_cfg, tok_cfg, model_cfg, train_cfg, source, data) -> dict[str, Any]:
    """What config.json records (the result is added when training ends)."""
    return {
        "model": to_dict(model_cfg),
        "tokenizer": to_dict(tok_cfg),
        "train": to_dict(train_cfg),
        "corpus": {**to_dict(corpus_cfg), "sources": source.sources},
        "labels": list(source.labels),  # --condition label: mark i stands for labels[i] (data/conditions.py)
        "data": {
            "train_tokens": int(len(data.train)),
            "val_tokens": int(0 if data.val is None else len(data.val)),
            "cache_key": data.key,  # `gentext eval RUN` reads the held-out ids from the token cache
        },
    }


def summary_of(result: trainer.TrainResult, net, tok, data, out: Path) -> dict[str, Any]:
    summary = {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "eval_seconds": round(result.eval_seconds, 2),
        "train_loss": result.train_loss,
        "val_loss": result.val_loss,
        "val_bpc": None,  # at word level <unk> counts as one token: `gentext eval` prices its spelling
        "level": tok.level,
        "tokens_per_second": round(result.tokens_per_second, 1),
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "resumed_at": result.resumed_at,
        "session_seconds": round(result.session_seconds, 2),
        "parameters": net.num_parameters(),
        "fitted_by_counting": fitted_by_counting(net),
        "out": str(out),
    }
    val_ids = data.val
    if result.val_loss is not None and val_ids is not None:
        # bpc: nats over the characters of the predicted tokens (all but the first), / ln 2.
        if result.val_tokens == len(val_ids) - 1:  # the whole validation text
            chars = max(data.val_chars - len(tok.decode(val_ids[:1])), 1)
        else:  # a capped evaluation: the characters of the tokens it predicted
            chars = max(len(tok.decode(val_ids[1 : result.val_tokens + 1])), 1)
        summary["val_bpc"] = result.val_loss * result.val_tokens / chars / math.log(2)
    return summary


def fit_by_counting(net, train_ids: np.ndarray, val_ids: np.ndarray | None, out: Path, main: bool):
    """Fit a counting model in one pass (every rank fits; only rank 0 writes and evaluates)."""
    start = time.perf_counter()
    net.fit(train_ids)
    val_loss, count = None, 0
    if main:
        checkpoint.save_weights(out, net)
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
