"""After a recurrent network has trained with `--neural-cache N`: fit its cache of up to N outputs
(models/cache.py) on validation text — the window (N/4, N/2 or N), the sharpness theta and the
weight lambda — and keep it only where it helps.

The network reads the validation tokens once as one stream; every window and theta on the grid is
then scored from those outputs (a window's products once for all thetas: the cache costs a product
per token, the network far more), with lambda fitted by EM for each (the same concave fit as the
chain's weight: models/mixture.py). The best is kept
when it lowers the validation loss by MIN_GAIN nats per token; on text that does not repeat itself
within the window (or a network that already knows) it is left off.

The paper's cache (dot products, heard everywhere) was opt-in: over characters, samples after a
long prompt were worse with it though the held-out loss was better (it spread probability over
the followers of like states, letters of other names). Over characters and subwords it now compares
by the cosine and is heard only where it is sure (`cache_kind`), its samples read near the network's own,
and the default command fits one (training/defaults.py, `auto_cache_window`). It still costs
generation speed: every token reads the window (4 MB a stream at 2,000 x 512) and runs the cache's
Python (RESULTS.md, "A cache heard where it is sure").
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from gentext import threads
from gentext.models.cache import cache_keys, fit_probs
from gentext.models.mixture import fit_weight, mixed_log_probs
from gentext.models.scoring import STREAM_WINDOW

logger = logging.getLogger(__name__)

WINDOWS = (4, 2, 1)  # the windows tried for `--neural-cache N`: N/4, N/2 and N
FIT_TOKENS = 1 << 15  # validation tokens the three numbers are chosen on
MIN_GAIN = 0.005  # nats per token on those tokens: less is noise, and the cache costs speed
# Over characters and subwords the cache compares outputs by their cosine and is heard where its top
# token holds GATE of its probability (models/cache.py): after a long prompt, Tiny Shakespeare's samples
# kept most of their real speaker names where the paper's cache (dot products, heard everywhere) lost
# most: it spells new names from pieces of old ones. Over words the paper's cache held out far better
# (PTB test perplexity 93 against 105, the network alone 108), and its spread falls on whole words
# (RESULTS.md, "A cache heard where it is sure" and "The cache over subwords").
GATE = 0.99999  # against 0.9999: held out 0.003 better, samples judged 0.02-0.04 better on two runs (RESULTS.md)
CHAR_THETAS = (5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)  # sharpness over cosines in [-1, 1]
WORD_THETAS = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.5, 2.0)  # over dot products


def cache_kind(level: str) -> tuple[str, tuple, float]:
    """The similarity, the thetas tried and the gate of a cache over tokens of this level."""
    return ("dot", WORD_THETAS, 0.0) if level == "word" else ("cosine", CHAR_THETAS, GATE)


def cacheable(net: nn.Module) -> bool:
    return callable(getattr(net, "features", None)) and callable(getattr(net, "readout", None))


@torch.inference_mode()
def _outputs(net: nn.Module, ids: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's outputs (1, N, H) and log P of each next token (1, N) over one stream."""
    ys, logps, state = [], [], None
    for start in range(0, ids.shape[1] - 1, seq_len):
        threads.tick()
        x, y = ids[:, start : start + seq_len], ids[:, start + 1 : start + seq_len + 1]
        out, state = net.features(x[:, : y.shape[1]], state)
        ys.append(out.float())
        logps.append(net.readout(out, y).float())
    return torch.cat(ys, dim=1), torch.cat(logps, dim=1)


@torch.inference_mode()
def fit_cache(
    net: nn.Module, val: np.ndarray, seq_len: int, device, window: int, *, level: str, gate: float | None = None
):
    """{"window", "theta", "weight", "gate", "similarity", "heard" (the share of tokens where the
    cache was heard), "val_loss", "net_val_loss", "tokens", "seconds"}: the best of the windows
    N/4, N/2, N (N = `window`) and the thetas on the grid, the weight fitted where the cache is
    heard (`gate`; where not given, the tokens' `level`'s: `cache_kind`), or None where none lowers
    the validation loss by MIN_GAIN."""
    start = time.perf_counter()
    was_training = net.training
    net.eval()
    try:
        ids = torch.from_numpy(np.asarray(val[: FIT_TOKENS + 1], dtype=np.int64)).to(device)[None]
        outputs, net_logp = _outputs(net, ids, max(seq_len, STREAM_WINDOW))
    finally:
        net.train(was_training)
    vocab = net.config.vocab_size
    similarity, thetas, chosen_gate = cache_kind(level)
    outputs, gate = cache_keys(outputs, similarity), chosen_gate if gate is None else gate
    inputs, targets = ids[:, :-1], ids[:, 1:]
    base = -float(net_logp.mean())
    best = None
    for size in sorted({max(1, window // part) for part in WINDOWS}):
        threads.tick()
        probs, heard = fit_probs(outputs, inputs, targets, size, thetas, gate, vocab)
        for theta, cache_p, filled in zip(thetas, probs, heard, strict=True):
            if not bool(filled.any()):
                continue
            lp_net = net_logp[filled].double().cpu().numpy()
            lp_cache = cache_p[filled].log().double().cpu().numpy()
            weight = 1.0 - fit_weight(lp_net, lp_cache)
            mixed = mixed_log_probs([lp_net, lp_cache], [1 - weight, weight])
            loss = -(mixed.sum() + float(net_logp[~filled].sum())) / targets.shape[1]
            if best is None or loss < best["val_loss"]:  # ascending sizes: a larger window must do better
                heard_share = round(float(filled.float().mean()), 4)
                best = {"window": size, "theta": theta, "weight": round(weight, 6), "val_loss": loss}
                best.update(gate=gate, similarity=similarity, heard=heard_share)
    seconds = round(time.perf_counter() - start, 2)
    if best is None or base - best["val_loss"] < MIN_GAIN:
        logger.info("no neural cache: none lowers the validation loss %.4f by %.3f nats/token", base, MIN_GAIN)
        return None
    best.update(net_val_loss=base, tokens=int(targets.shape[1]), seconds=seconds)
    logger.info(
        "neural cache of the last %d outputs (theta %.2f, weight %.3f where heard: %.1f%% of tokens): %.4f nats/token "
        "on %d validation tokens (network %.4f)", best["window"], best["theta"], best["weight"], 100 * best["heard"],
        best["val_loss"], best["tokens"], base,
    )  # fmt: skip
    return best
