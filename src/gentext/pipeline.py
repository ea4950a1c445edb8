"""The training pipeline behind `gentext.train` (api.py): prepare the data (read, tokenize, choose what the
text needs), build the model, fit it (by counting, or on the one training loop with the feed its
condition needs), finish (the chain and cache mixed in, the summary, config.json)."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import torch

from gentext import checkpoint, claim
from gentext.conditions import Condition, condition_for
from gentext.data.tokencache import TokenData
from gentext.errors import GentextError
from gentext.hardware import resolve_device, resolve_precision
from gentext.inference.textmodel import TextModel
from gentext.models import build_model, fitted_by_counting
from gentext.models.scoring import evaluate
from gentext.runconfig import RunConfig, TrainSummary
from gentext.training import distill, distributed, finetune, mixing, trainer
from gentext.training.feeds import FINAL_EVAL_TOKENS
from gentext.training.records import tensorboard_writer


def run(
    out: Path, info, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, origin, *, force, resume, progress, on_eval
) -> TrainSummary:
    """Prepare the data, build the model, fit it and finish the run (mixing, the final config);
    `tok` is a resumed run's tokenizer, `origin` the run being fine-tuned. Returns the summary."""
    condition = condition_for(corpus_cfg)
    for cfg in (corpus_cfg, tok_cfg, train_cfg):
        cfg.validate()
    device = resolve_device(train_cfg.device)
    resolve_precision(train_cfg.precision, device)  # a precision this machine lacks fails before any write
    if train_cfg.tensorboard:
        tensorboard_writer()  # ... and so does a missing package
    tok, data, config = condition.prepare(corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress, origin)
    torch.manual_seed(train_cfg.seed)
    net = build_model(model_cfg)
    if train_cfg.distill:  # before anything is written
        teachable = condition.teachable and not fitted_by_counting(net)
        distill.check(teachable, len(data.train) if teachable else 0, tok.vocab_size)
    added = finetune.init_weights(net, origin) if origin is not None else 0
    if resume and fitted_by_counting(net):
        raise GentextError(f"a {model_cfg.kind} model is fitted in one pass; there is nothing to resume (retrain it)")
    if origin is not None:
        config = dataclasses.replace(config, init_from={"run": str(origin.run_dir), "tokens_added": added})
    callback = None
    if on_eval is not None:
        callback = lambda step, val: on_eval(step, val, TextModel(net, tok, config, out, condition=condition))  # noqa: E731
    owned = claim.claimed(out, checkpoint.WEIGHTS) if info.is_main else contextlib.nullcontext()
    try:
        with owned:  # no other process writes this run meanwhile; a failed new run leaves no folder
            if info.is_main and not resume:  # under torchrun only rank 0 touches the run directory
                checkpoint.prepare_run_dir(out, force)  # --force clears a run only once it is ours
                checkpoint.save_run_files(out, config, tok)
            result = fit(net, tok, data, condition, train_cfg, out, device, callback, progress, resume)
            summary = finish(result, net, tok, data, condition, out, config, origin, train_cfg, device)
        distributed.barrier(info)  # everyone leaves together, once rank 0 has written
    finally:
        distributed.teardown(info)
    return summary


def fit(net, tok, data, condition: Condition, train_cfg, out: Path, device, callback, progress: bool, resume: bool):
    """Fit the model: by counting, or on the one training loop with the feed its condition needs
    (training/feeds.py: windows of a stream, source/target pairs, or captioned pictures)."""
    if fitted_by_counting(net):  # counted, not trained by gradient steps
        return fit_by_counting(net, data.train, data.val, out, distributed.from_env().is_main)
    make_feed = condition.feed(tok, data, train_cfg, progress)
    return trainer.train(net, make_feed, train_cfg, out, device, callback, progress, resume)


def finish(
    result, net, tok, data, condition: Condition, out: Path, config: RunConfig, origin, train_cfg, device
) -> TrainSummary:
    """The summary (with what fine-tuning cost on the origin's text) and, on rank 0, the final
    config.json with the result."""
    main = distributed.from_env().is_main
    stream = condition.stream_data(data)  # a token stream (pictures are not one)
    summary = summary_of(result, net, tok, stream, out)
    mixed = mixing.Mixed()
    with claim.saving(out) if main else contextlib.nullcontext():  # the chain and the config as one save
        if main and stream is not None:
            mixed = mixing.mix_after_training(net, condition.mixing(tok), stream, train_cfg, out, device)
            fit = mixed.mixture_fit or {}
            summary = dataclasses.replace(
                summary, cache=mixed.cache_fit, mixture=mixed.mixture_fit, sampled_val_loss=fit.get("val_loss")
            )  # the model a user samples, on text nothing was fitted on
        if origin is not None and main:
            forgot = finetune.forgetting(net, origin, train_cfg.seq_len, device)
            summary = dataclasses.replace(summary, init_from={**config.init_from, **forgot})
        if main:
            final = dataclasses.replace(config, cache=mixed.cache, mixture=mixed.mixture, result=summary)
            checkpoint.save_run_files(out, final, tok)
    return summary


def summary_of(result: trainer.TrainResult, net, tok, data: TokenData | None, out: Path) -> TrainSummary:
    return TrainSummary(
        steps=result.steps,
        tokens=result.tokens,
        seconds=round(result.seconds, 2),
        eval_seconds=round(result.eval_seconds, 2),
        train_loss=result.train_loss,
        val_loss=result.val_loss,
        val_bpc=val_bpc(result, tok, data),
        level=tok.level,
        tokens_per_second=round(result.tokens_per_second, 1),
        best_step=result.best_step,
        stopped_early=result.stopped_early,
        resumed_at=result.resumed_at,
        session_seconds=round(result.session_seconds, 2),
        parameters=net.num_parameters(),
        fitted_by_counting=fitted_by_counting(net),
        out=str(out),
    )


def val_bpc(result: trainer.TrainResult, tok, data: TokenData | None) -> float | None:
    """Bits per character of the final validation: its nats over the characters of the tokens it
    predicted (all but the first), / ln 2. None without a token stream."""
    val_ids = None if data is None else data.val
    if result.val_loss is None or val_ids is None:
        return None
    if result.val_tokens == len(val_ids) - 1:  # the whole validation text
        chars = max(data.val_chars - len(tok.decode(val_ids[:1])), 1)
    else:  # a capped evaluation: the characters of the tokens it predicted
        chars = max(len(tok.decode(val_ids[1 : result.val_tokens + 1])), 1)
    return result.val_loss * result.val_tokens / chars / math.log(2)


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
