"""After a network has trained: fit a Kneser-Ney chain on the same training tokens and the weight
that mixes the two on validation tokens (models/mixture.py; issue 30). A recurrent network gets its
neural cache first where that helps (training/caching.py), and the chain mixes with both.

On a 100 KB text the chain alone often beats a few minutes of network, and the mixture beats both
(RESULTS.md, bench_quality.py), so it is on by default where it is cheap: a network language
model or a labelled one (not a pair, picture or pretrained run) with validation text, trained on
under MAX_TRAIN_TOKENS tokens (the counts of a bigger text take more memory than they are worth
there). A labelled run gets one chain per label (models/labelchain.py), so the chain steers too.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from gentext import checkpoint, threads
from gentext.config import TrainConfig
from gentext.models.cache import CacheModel
from gentext.models.mixture import fit_weight, new_chain
from gentext.training.caching import cacheable, fit_cache

logger = logging.getLogger(__name__)

MAX_TRAIN_TOKENS = 20_000_000  # default on below this many training tokens
FIT_TOKENS = 1 << 16  # validation tokens the weight is fitted on (one number: plenty)
SMALL_VOCAB = 256  # a vocabulary this small (characters) gets order 6; a larger one (words) order 3


def chosen_order(
    config: TrainConfig, net: nn.Module, condition: str, train_tokens: int, val_tokens: int, marks: list | None = None
) -> int:
    """The chain's order for this run, 0 for none. A labelled run needs each label's mark to be
    one token (`marks`: their ids), which byte-level BPE does not give."""
    eligible = net.config.kind in ("lstm", "gru", "rnn", "transformer") and (
        condition == "none" or (condition == "label" and marks is not None)
    )
    if config.mix_order is not None:
        return config.mix_order if eligible and val_tokens >= 2 else 0
    if not eligible or val_tokens < 2 or train_tokens > MAX_TRAIN_TOKENS:
        return 0
    return 6 if net.config.vocab_size <= SMALL_VOCAB else 3


def token_log_probs(model: nn.Module, ids: np.ndarray, seq_len: int, device) -> np.ndarray:
    """log P(ids[t+1] | ids[..t]) for one stream, float64, its state carried window to window."""
    stream = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)[None]
    out, state = [], None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, stream.shape[1] - 1, seq_len):
                threads.tick()
                x, y = stream[:, start : start + seq_len], stream[:, start + 1 : start + seq_len + 1]
                x = x[:, : y.shape[1]]
                logp, state = model(x, state, targets=y)
                out.append(logp[0].double().cpu().numpy())
    finally:
        model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0)


def fit_mixture(
    net: nn.Module, train: np.ndarray, val: np.ndarray, order: int, seq_len: int, device, marks: list | None = None
) -> dict:
    """Fit the chain (one per label where `marks` are given) and the weight; returns {"chain",
    "order", "weight", "val_loss", "net_val_loss", "chain_val_loss", "tokens", "seconds"}: the
    losses on the FIT_TOKENS validation tokens used."""
    start = time.perf_counter()
    if float(net.config.vocab_size) ** order >= 2**62:  # the chain's keys must fit in int64
        order = max(1, int(62 * np.log(2) / np.log(net.config.vocab_size)) - 1)
    chain = new_chain(order, net.config.vocab_size, marks).fit(np.asarray(train))
    held = np.asarray(val[: FIT_TOKENS + 1])
    net_lp = token_log_probs(net, held, seq_len, device)
    chain_lp = token_log_probs(chain, held, max(seq_len, 4096), "cpu")
    weight = fit_weight(net_lp, chain_lp)
    mixed = np.logaddexp(np.log(max(weight, 1e-12)) + net_lp, np.log(max(1 - weight, 1e-12)) + chain_lp)
    result = {
        "chain": chain,
        "order": order,
        "weight": round(weight, 6),
        "val_loss": float(-mixed.mean()),
        "net_val_loss": float(-net_lp.mean()),
        "chain_val_loss": float(-chain_lp.mean()),
        "tokens": int(len(net_lp)),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info(
        "mixed with a Kneser-Ney chain of order %d (weight %.3f): %.4f nats/token on %d validation tokens "
        "(network %.4f, chain %.4f)",
        order, weight, result["val_loss"], result["tokens"], result["net_val_loss"], result["chain_val_loss"],
    )  # fmt: skip
    return result


def mix_after_training(net: nn.Module, marks, data, config: dict, train: TrainConfig, out, device, summary: dict):
    """Give the network its neural cache and its Kneser-Ney chain where those are on: written to
    config.json ("cache", "mixture") and the chain's file, reported in the summary. `marks`: a
    labelled run's mark ids (inference/conditioning.mark_ids)."""
    val_tokens = 0 if data.val is None else len(data.val)
    condition, labels = config["corpus"]["condition"], config["labels"]
    if condition == "none" and val_tokens >= 2 and cacheable(net) and train.cache_window:
        fitted = fit_cache(net, data.val, train.seq_len, device, train.cache_window)
        if fitted is not None:
            config["cache"] = {key: fitted[key] for key in ("window", "theta", "weight")}
            summary["cache"], net = fitted, CacheModel(net, **config["cache"])
    marks = marks if marks is None or len(marks) == len(labels) else None  # every mark one token
    order = chosen_order(train, net, condition, len(data.train), val_tokens, marks)
    if not order:
        return
    fitted = fit_mixture(net, data.train, data.val, order, train.seq_len, device, marks)
    checkpoint.save_chain(out, fitted.pop("chain"))
    config["mixture"] = {"order": fitted["order"], "weight": fitted["weight"]}
    if marks is not None:  # one chain per label (models/labelchain.py)
        config["mixture"]["labels"] = fitted["labels"] = len(marks)
    summary["mixture"] = fitted
