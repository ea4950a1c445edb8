"""A network mixed with a Kneser-Ney chain at the probability level, behind the one contract:

    P(w | history) = lambda * P_net(w | history) + (1 - lambda) * P_chain(w | last order-1 tokens)

On a small text the chain knows the exact phrases the network has not yet learned and the network
generalises where the chain backs off, so the mixture beats both (RESULTS.md,
bench_quality.py). The chain is fitted on the run's training tokens after training and lambda on
its validation tokens by EM (`fit_weight`), never on text a benchmark reports.

The state is both states side by side, each tensor's name prefixed `net.` or `chain.`, so beams,
batches, streams and the server carry it like any other. Inputs a network reads specially
(a condition, a weight format) go to the network; the chain reads ids.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gentext.config import ModelConfig
from gentext.models import mixedrun
from gentext.models.labelchain import LabelChain
from gentext.models.markov import MarkovModel
from gentext.models.priming import is_reading_samples
from gentext.models.state import State, nested, part, part_tensors

FIT_TOKENS = 1 << 16  # validation tokens the weights and the order are chosen on (a few numbers: plenty)
REPORT_TOKENS = 1 << 16  # the validation tokens after those that training reports the mixture on


def fitted_part(val_tokens: int) -> int:
    """How many of a run's first validation tokens its mixture and cache were chosen on: FIT_TOKENS,
    or half of a shorter text. Training reports the model on the tokens after them, and `gentext
    eval` of the run's own held-out split leaves them out."""
    return min(FIT_TOKENS, val_tokens // 2)


def held_out_parts(val: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The validation ids the mixing is fitted on and those it is reported on, apart: the first
    `fitted_part` and the REPORT_TOKENS after them, so the reported figure is on text no weight,
    window or order was chosen on."""
    fit = fitted_part(len(val))
    return np.asarray(val[: fit + 1]), np.asarray(val[fit : fit + REPORT_TOKENS + 1])


def new_chain(order: int, vocab: int, marks: list[int] | None = None) -> nn.Module:
    """An unfitted chain for a mixture: one Kneser-Ney chain, or one per label where the labels'
    mark ids are given (models/labelchain.py). Training fits it; loading fills it from the file."""
    if marks is None:
        return MarkovModel(ModelConfig(kind="markov", order=order, vocab_size=vocab))
    return LabelChain(order, vocab, marks)


class MixtureModel(nn.Module):
    """`net` (any network kind) and `chain` (a fitted `new_chain`) mixed with weight `weight`."""

    def __init__(self, net: nn.Module, chain: nn.Module, weight: float):
        super().__init__()
        self.net, self.chain = net, chain
        self.config = net.config
        self.carries_state = net.carries_state
        self.weight = float(weight)
        self._logs = (math.log(max(self.weight, 1e-12)), math.log(max(1.0 - self.weight, 1e-12)))
        if hasattr(net, "set_weight_format"):  # a weight format (fp32/bf16/int8) is the network's alone
            self.set_weight_format = net.set_weight_format

    def initial_state(self, batch: int, device=None, condition=None) -> State:
        net = self.net.initial_state(batch, device, condition=condition)
        return nested({"net": net, "chain": self.chain.initial_state(batch, device)})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        net, chain = (part_tensors(tensors, prefix) for prefix in ("net", "chain"))
        return nested({"net": self.net.state_from_tensors(net), "chain": self.chain.state_from_tensors(chain)})

    def forward(self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """As every kind's: log-probabilities of the mixture (B, T, V), or of `targets` (B, T). A
        token of the model's own samples takes one compiled call where there is one (mixedrun.py)."""
        sampled = targets is None and ids.shape[1] == 1 and is_reading_samples() and not torch.is_grad_enabled()
        if sampled and not self.training and (read := mixedrun.read_sample(self, ids, state)) is not None:
            return read
        net_out, net_state = self.net(ids, part(state, "net"), targets=targets)
        chain_out, chain_state = self.chain(ids.cpu(), part(state, "chain"), targets=targets)
        if targets is None:
            net_out = torch.log_softmax(net_out.float(), dim=-1)
        mixed = torch.logaddexp(net_out.float() + self._logs[0], chain_out.to(net_out.device) + self._logs[1])
        return mixed, nested({"net": net_state, "chain": chain_state.map(lambda t: t.to(ids.device))})

    def draw_ahead(self, logits, state: State, count: int, sampler, generator, end_id, read_last: bool):
        """Up to `count` plainly sampled (or greedy) tokens of a request's rows, drawn and read in one
        compiled call (models/mixedrun.py: the network's step, its cache, the chain's row and the
        mixing, as `forward` makes them) -> (ids: a list for one row,
        (count, B) for a batch, logits (B, V), state); None where that call is not here (a label's
        chains, no kernels): the engine then steps token by token, to the same ids."""
        return mixedrun.draw_ahead(self, logits, state, count, sampler, generator, end_id, read_last)

    def num_parameters(self) -> int:
        return self.net.num_parameters()


def fit_weight(net_logp: np.ndarray, chain_logp: np.ndarray, rounds: int = 100) -> float:
    """The lambda that maximises the mean log-likelihood of lambda p_net + (1 - lambda) p_chain
    over held-out tokens, by EM (each round cannot lower it; the objective is concave in lambda)."""
    return float(fit_weights([net_logp, chain_logp], rounds)[0])


def fit_weights(log_probs: list[np.ndarray], rounds: int = 100) -> np.ndarray:
    """The weights (summing to 1) of the mixture of K models that maximise the mean log-likelihood
    of held-out tokens, from each model's log P of each token: EM, from equal weights."""
    p = np.exp(np.stack([np.asarray(lp, dtype=np.float64) for lp in log_probs], axis=1))  # (N, K)
    weights = np.full(p.shape[1], 1.0 / p.shape[1])
    for _ in range(rounds):
        share = weights * p / np.maximum(p @ weights, 1e-300)[:, None]
        new = share.mean(axis=0)
        if np.abs(new - weights).max() < 1e-7:
            return new
        weights = new
    return weights


def mixed_log_probs(log_probs: list[np.ndarray], weights) -> np.ndarray:
    """log of the weighted sum of the components' probabilities, token by token (what the mixture
    with these weights assigns to each held-out token)."""
    logs = np.stack(log_probs, axis=1) + np.log(np.maximum(np.asarray(weights, dtype=np.float64), 1e-12))
    return np.logaddexp.reduce(logs, axis=1)
