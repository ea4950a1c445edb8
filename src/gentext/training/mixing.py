"""After a network has trained: fit a Kneser-Ney chain on the same training tokens and the weight
that mixes the two on validation tokens (models/mixture.py). A recurrent network gets its
neural cache first where that helps (training/caching.py), and the chain mixes with both.

On a 100 KB text the chain alone often beats a few minutes of network, and the mixture beats both
(RESULTS.md, bench_quality.py), so it is on by default where it is cheap: a network language
model or a labelled one (not a pair, picture or pretrained run) with validation text, trained on
under MAX_TRAIN_TOKENS tokens (the counts of a bigger text take more memory than they are worth
there). A labelled run gets one chain per label (models/labelchain.py), so the chain steers too.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gentext import checkpoint, threads
from gentext.config import TrainConfig
from gentext.models.cache import CacheModel
from gentext.models.mixture import fit_weights, held_out_parts, mixed_log_probs, new_chain
from gentext.models.scoring import STREAM_WINDOW
from gentext.runconfig import CacheRecord, MixRecord
from gentext.training.caching import cacheable, fit_cache

logger = logging.getLogger(__name__)

MAX_TRAIN_TOKENS = 20_000_000  # default on below this many training tokens
CHAR_VOCAB = 256  # a vocabulary this small is characters (bytes at most): the chain's orders 6-8 fit its counts
SEARCH_TOKENS = 5_000_000  # up to this many training characters, orders 6, 7 and 8 are tried (the counts' memory)


@dataclass(frozen=True)
class Mixing:
    """What a run's condition lets mixing add to its network (gentext/conditions: `mixing`)."""

    cache: bool  # a neural cache: the text is one stream
    chain: bool  # a Kneser-Ney chain
    marks: list[int] | None = None  # a labelled run: each label's mark id (one chain per label)
    level: str = "char"  # the tokens': the cache over words is the paper's (training/caching.py)


def chosen_orders(
    config: TrainConfig, net: nn.Module, chain: bool, train_tokens: int, val_tokens: int, marks: list | None = None
) -> tuple[int, ...]:
    """The chain orders validation chooses from for this run, () for no chain. `chain`: the run's
    condition takes one (plain text; a labelled run whose every mark is one token, `marks` their
    ids). Characters: 6, 7 or 8 on texts of up to SEARCH_TOKENS (Tiny Shakespeare chose 8: 0.01
    nats/char on validation and test over 6), else 6; words: 3."""
    eligible = chain and getattr(network_of(net), "mixable", False)
    if config.mix_order is not None:
        return (config.mix_order,) if config.mix_order and eligible and val_tokens >= 2 else ()
    if not eligible or val_tokens < 2 or train_tokens > MAX_TRAIN_TOKENS:
        return ()
    if net.config.vocab_size > CHAR_VOCAB:  # words: order 3; characters: 6-8
        return (3,)
    return (6, 7, 8) if train_tokens <= SEARCH_TOKENS and marks is None else (6,)


def token_log_probs(model: nn.Module, ids: np.ndarray, seq_len: int, device) -> np.ndarray:
    """log P(ids[t+1] | ids[..t]) for one stream, float64, its state carried window to window."""
    return _streamed(lambda x, state, y: model(x, state, targets=y), model, ids, seq_len, device)[0]


def components(net: nn.Module, ids: np.ndarray, seq_len: int, device) -> list[np.ndarray]:
    """What the chain mixes with, as separate components: a cached network's network and cache
    (models/cache.py `parts`, in `seq_len` windows), so their weights are fitted with the chain's;
    any other, itself (in windows of at least STREAM_WINDOW). The first is the network's own."""
    if not isinstance(net, CacheModel):
        return [token_log_probs(net, ids, max(seq_len, STREAM_WINDOW), device)]

    def both(x, state, y):
        net_logp, cache_logp, _, state = net.parts(x, state, targets=y)
        return net_logp, cache_logp, state

    return _streamed(both, net, ids, seq_len, device)


def _streamed(call, model: nn.Module, ids: np.ndarray, seq_len: int, device) -> list[np.ndarray]:
    """call(x, state, y) -> (log P of each target (1, T) ..., state) over one stream, window by
    window, each output concatenated (float64)."""
    stream = torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)[None]
    out, state = [], None
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for start in range(0, stream.shape[1] - 1, seq_len):
                threads.tick()
                x, y = stream[:, start : start + seq_len], stream[:, start + 1 : start + seq_len + 1]
                *logps, state = call(x[:, : y.shape[1]], state, y)
                out.append([lp[0].double().cpu().numpy() for lp in logps])
    finally:
        model.train(was_training)
    return [np.concatenate(column) for column in zip(*out, strict=True)] if out else [np.zeros(0)]


def _storable(order: int, vocab: int) -> int:
    """`order`, lowered where the chain's keys would not fit in int64 (a near-256 character
    vocabulary lowers 8 to an order already tried: fitting it twice was wasted work)."""
    return order if float(vocab) ** order < 2**62 else max(1, int(62 * np.log(2) / np.log(vocab)) - 1)


def fit_mixture(
    net: nn.Module, train: np.ndarray, val: np.ndarray, orders, seq_len: int, device, marks: list | None = None
) -> dict:
    """Fit a chain of each order in `orders` (one per label where `marks` are given) and the
    weights that mix it with the network on the first part of the validation ids (held_out_parts),
    and keep the order whose mixture scores best there (a higher one only where it does better); then
    report it on the other part. A cached network enters as its two components (`components`), so
    the cache's weight is fitted with the chain's: fitted alone first, it left 0.002 nats/char on
    validation and 0.008 on test (Tiny Shakespeare, RESULTS.md). Returns {"chain", "order",
    "weight" (the network's, cache included), "cache_weight" (cached networks), "val_loss",
    "net_val_loss", "chain_val_loss", "tokens" (all four on the reported part), "fit_loss",
    "fit_tokens", "seconds"}."""
    start = time.perf_counter()
    vocab = net.config.vocab_size
    held, report = held_out_parts(val)
    parts = components(net, held, seq_len, device)  # [network] or [network, cache]
    best = None
    for order in sorted({_storable(order, vocab) for order in orders}):  # each fitted once
        threads.tick()
        chain = new_chain(order, vocab, marks).fit(np.asarray(train))
        chain_lp = token_log_probs(chain, held, max(seq_len, 4096), "cpu")
        weights = fit_weights([*parts, chain_lp])
        loss = -mixed_log_probs(parts + [chain_lp], weights).mean()
        if best is None or loss < best["val_loss"] - 1e-4:
            best = {"chain": chain, "order": order, "weights": weights, "val_loss": float(loss), "chain_lp": chain_lp}
    weights, fit_loss = best.pop("weights"), best.pop("val_loss")
    best.pop("chain_lp")
    network = float(weights[:-1].sum())
    if len(parts) == 2:
        best["cache_weight"] = round(float(weights[1]) / max(network, 1e-12), 6)
    parts = components(net, report, seq_len, device)  # the part nothing was chosen on; [0]: the network's own
    chain_lp = token_log_probs(best["chain"], report, max(seq_len, 4096), "cpu")
    net_alone = -parts[0].mean()
    result = {
        **best,
        "weight": round(network, 6),
        "val_loss": float(-mixed_log_probs([*parts, chain_lp], weights).mean()),
        "net_val_loss": float(net_alone),
        "chain_val_loss": float(-chain_lp.mean()),
        "tokens": int(len(chain_lp)),
        "fit_loss": float(fit_loss),
        "fit_tokens": int(len(held) - 1),
        "seconds": round(time.perf_counter() - start, 2),
    }
    logger.info(
        "mixed with a Kneser-Ney chain of order %d (weight %.3f): %.4f nats/token on %d held-out tokens that no "
        "weight or order was chosen on (network alone %.4f, chain alone %.4f)",
        result["order"], network, result["val_loss"], result["tokens"],
        result["net_val_loss"], result["chain_val_loss"],
    )  # fmt: skip
    return result


def network_of(model: nn.Module) -> nn.Module:
    """The network inside a cached network (its own loss is the network's alone)."""
    return model.net if isinstance(model, CacheModel) else model


@dataclass(frozen=True)
class Mixed:
    """What mixing fitted: the records config.json keeps, and the fits the summary reports."""

    cache: CacheRecord | None = None
    mixture: MixRecord | None = None
    cache_fit: dict | None = None
    mixture_fit: dict | None = None


def mix_after_training(net: nn.Module, mixing: Mixing, data, train: TrainConfig, out, device) -> Mixed:
    """Give the network its neural cache and its Kneser-Ney chain where the run's condition takes
    them (`mixing`) and they are on; the chain's file is written."""
    val_tokens = 0 if data.val is None else len(data.val)
    cache = cache_fit = None
    if mixing.cache and val_tokens >= 4 and cacheable(net) and train.cache_window:  # chosen on the fit part
        fit_part = held_out_parts(data.val)[0]
        cache_fit = fit_cache(net, fit_part, train.seq_len, device, train.cache_window, level=mixing.level)
        if cache_fit is not None:
            cache = CacheRecord(*(cache_fit[key] for key in ("window", "theta", "weight", "gate", "similarity")))
            net = CacheModel(net, *dataclasses.astuple(cache))
    marks = mixing.marks
    orders = chosen_orders(train, net, mixing.chain, len(data.train), val_tokens, marks)
    if not orders or val_tokens < 4:  # two parts of at least two tokens each
        return Mixed(cache, None, cache_fit)
    fitted = fit_mixture(net, data.train, data.val, orders, train.seq_len, device, marks)
    checkpoint.save_chain(out, fitted.pop("chain"))
    if "cache_weight" in fitted:  # refitted with the chain's (the summary's cache line: the cache's own fit)
        cache = dataclasses.replace(cache, weight=fitted["cache_weight"])
    if marks is not None:  # one chain per label (models/labelchain.py)
        fitted["labels"] = len(marks)
    return Mixed(cache, MixRecord(fitted["order"], fitted["weight"], fitted.get("labels")), cache_fit, fitted)
