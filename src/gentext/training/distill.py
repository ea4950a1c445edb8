"""A Kneser-Ney chain as a teacher: each training target is partly the chain's prediction.

A network that reads a small text many times memorises it; a Kneser-Ney chain fitted on the same
text generalises differently (its smoothing backs off to shorter contexts where a long one was rare).
With `--distill A` the loss of each position is

    (1 - A) * -log q(next token)  +  A * -sum_w p(w | context) log q(w)

where q is the network and p the chain (Hinton et al. 2015, with a counted teacher). The chain must
not have seen the position it teaches: fitted on the whole text it would give every training
target the probability of a memorised continuation, and the network would learn nothing from it.
So the text is cut into FOLDS parts and each part's predictions come from a chain fitted on the
others (k-fold, as cross-validation does). The predictions are computed once, before the first
step, and held as float16 (tokens x vocabulary): `MAX_TEACHER_BYTES` bounds that table.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models.markov import MarkovModel

logger = logging.getLogger(__name__)

ORDER = 6  # the teacher chain's n-gram order (RESULTS.md, "A chain as a teacher")
FOLDS = 5  # each fifth of the text is taught by a chain fitted on the other four
MAX_TEACHER_BYTES = 2 << 30  # the table: tokens x vocabulary x 2 bytes
CHUNK = 65_536  # positions a chain predicts at once (its output is chunk x vocabulary float32)


def _table_bytes(tokens: int, vocab: int) -> int:
    return tokens * vocab * 2  # float16


def fits(tokens: int, vocab: int) -> bool:
    """Whether the teacher's table for `tokens` tokens of a `vocab`-token vocabulary is within bounds."""
    return _table_bytes(tokens, vocab) <= MAX_TEACHER_BYTES


def check(teachable: bool, tokens: int, vocab: int) -> None:
    """Refuse --distill where there is no stream for a chain to teach, or its table would not fit."""
    if not teachable:
        raise GentextError("--distill teaches a network trained on one stream of text (not pairs, pictures or a chain)")
    if not fits(tokens, vocab):
        need = _table_bytes(tokens, vocab) / 2**30
        raise GentextError(
            f"--distill needs a {need:.1f} GiB table for {tokens:,} tokens of a {vocab:,}-token vocabulary "
            f"(at most {MAX_TEACHER_BYTES / 2**30:.0f} GiB); it is meant for small texts: drop --distill"
        )


def teacher(ids: np.ndarray, vocab: int, progress: bool = False) -> torch.Tensor:
    """(N, V) float16: row i is the chain's distribution of token i given the tokens before it,
    from a chain that never saw the fold holding position i (row 0, with nothing before: uniform)."""
    check(teachable=True, tokens=len(ids), vocab=vocab)
    ids = np.asarray(ids, dtype=np.int64)
    start = time.perf_counter()
    table = torch.full((len(ids), vocab), 1.0 / vocab, dtype=torch.float16)
    bounds = np.linspace(0, len(ids), FOLDS + 1).astype(np.int64)
    config = ModelConfig(kind="markov", vocab_size=vocab, order=ORDER)
    folds = list(zip(bounds[:-1], bounds[1:], strict=True))
    for a, b in tqdm(folds, desc="teacher chains", unit="fold", disable=not progress, leave=False):
        chain = MarkovModel(config).fit(np.concatenate([ids[:a], ids[b:]]))
        _predict(chain, ids, max(int(a), 1), int(b), table)
    logger.info(
        "--distill: an order-%d chain fitted on %d of %d parts of the text predicts each token of the other (%.1fs)",
        ORDER, FOLDS - 1, FOLDS, time.perf_counter() - start,
    )  # fmt: skip
    return table


def _predict(chain: MarkovModel, ids: np.ndarray, first: int, stop: int, table: torch.Tensor) -> None:
    """Rows first..stop-1 of `table`: the chain reads from ORDER tokens before `first` (its context)
    and its output after reading token j predicts token j + 1."""
    state = None
    begin = max(first - ORDER, 0)
    with torch.no_grad():
        for lo in range(begin, stop - 1, CHUNK):
            hi = min(lo + CHUNK, stop - 1)
            logp, state = chain(torch.from_numpy(ids[lo:hi])[None], state)
            keep = max(first - 1 - lo, 0)  # outputs before `first`'s predecessor only built the context
            table[lo + 1 + keep : hi + 1] = logp[0, keep:].exp().to(torch.float16)


def loss(logits: torch.Tensor, targets: torch.Tensor, taught: torch.Tensor, weight: float):
    """(the loss to minimise, the targets' own mean negative log-likelihood: what a run reports)
    from logits (B, T, V), target ids (B, T) and the teacher's distributions (B, T, V)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    nll = -logp.gather(2, targets[..., None])[..., 0].mean()
    soft = -(taught.float() * logp).sum(-1).mean()
    return (1.0 - weight) * nll + weight * soft, nll
