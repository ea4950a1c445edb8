"""A mixed run's sampled tokens in the compiled kernels (native/mixed.h), for `MixtureModel` and for
a `CacheModel` without a chain.

A token of the model's own samples runs the network's step, its neural cache where it has one, the
chain's row of the new context and the mixing. From Python those are four calls with their state
handling around them, as much time as the parts; the kernels make the same calls in the same order
in one (`read_sample`), or draw and read a run of tokens in one (`draw_ahead`), so the numbers and
the generator's stream are the Python path's. Where a part has no compiled form (a label's chains,
a Transformer, an adaptive head, no kernels), both return None and `forward` runs as it stands. The
models are told apart by what they have (a chain; a cache's `window_state`): cache.py calls in here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gentext import native, threads
from gentext.models.markov import MarkovModel
from gentext.models.state import State, nested, part


@dataclass
class _Parts:
    """What the kernels' mixed step needs: the module, the network's step, how the network's state
    is made from what the step carries (h[, c]), the MixSpec, and what the state holds now."""

    kernels: Any
    step: Any
    state_of: Callable[..., State]
    spec: Any
    h: torch.Tensor
    c: torch.Tensor | None
    cache: Any  # the CacheModel, or None
    keys: torch.Tensor  # the cache's window (empty without a cache)
    nexts: torch.Tensor
    context: torch.Tensor  # the chain's last order-1 ids
    split: bool  # the products on two cores


def _compiled(model, state: State, rows: int) -> _Parts | None:
    """The parts of a compiled step of `model` (a MixtureModel, or a CacheModel alone: the one with
    a `window_state`) for `rows` rows in `state`, or None where there is none."""
    kernels, mixed = native.kernels(), hasattr(model, "chain")
    outer = model.net if mixed else model  # the network, or the cache around it
    cache = outer if hasattr(outer, "window_state") else None
    net = outer if cache is None else outer.net
    made = net.run_step() if kernels is not None and hasattr(net, "run_step") else None
    chain_rows = model.chain.compiled_rows() if mixed and isinstance(model.chain, MarkovModel) else None
    if made is None or (mixed and chain_rows is None):
        return None
    outer_state = part(state, "net") if mixed else state
    net_state = outer_state if cache is None else part(outer_state, "net")
    if cache is not None:
        window = part(outer_state, "cache").tensors
        keys, nexts = window["keys"], window["next"]
        spec = (cache.theta, cache.gate, cache.similarity == "cosine", *cache._logs)
    else:
        keys = nexts = torch.empty(0)
        spec = None
    context = part(state, "chain").tensors["context"].long() if mixed else torch.empty(0, dtype=torch.long)
    return _Parts(
        kernels, *made, kernels.MixSpec(chain_rows, *(model._logs if mixed else (0.0, 0.0)), spec),
        net_state.tensors["h"], net_state.tensors.get("c"), cache, keys, nexts, context, threads.spare_core(rows),
    )  # fmt: skip


def _state(model, made: _Parts, nexts: torch.Tensor, context: torch.Tensor, hc: list) -> State:
    """The model's state after the kernels' call: the network's from h[, c], the cache's window
    (its keys unchanged: samples are not remembered) and followers, the chain's context."""
    net_state = made.state_of(*hc)
    if made.cache is not None:
        net_state = nested({"net": net_state, "cache": made.cache.window_state(made.keys, nexts)})
    if not hasattr(model, "chain"):
        return net_state
    return nested({"net": net_state, "chain": State({"context": context}, {"context": 0})})


def read_sample(model, ids: torch.Tensor, state: State | None):
    """`forward` for one token a row of the model's own samples, ids (B, 1), in one compiled call:
    (log-probabilities (B, 1, V), state), or None where it is not here."""
    made = None if state is None else _compiled(model, state, ids.shape[0])
    if made is None:
        return None
    logits, nexts, context, *hc = made.kernels.read_mixed(
        made.step, made.spec, ids[:, 0].long(), made.h, made.c, made.keys, made.nexts, made.context, made.split
    )
    return logits, _state(model, made, nexts, context, hc)


def draw_ahead(model, logits, state: State, count: int, sampler, generator, end_id, read_last: bool):
    """`MixtureModel.draw_ahead` and `CacheModel.draw_ahead`: up to `count` plainly sampled tokens of
    a request's rows drawn and read in one compiled call -> (ids: a list for one row, (count, B) for
    a batch, logits (B, V), state), or None where it is not here."""
    made = _compiled(model, state, logits.shape[0])
    if made is None:
        return None
    ids, logits, nexts, context, *hc = made.kernels.run_mixed(
        made.step, made.spec, logits, made.h, made.c, made.keys, made.nexts, made.context, count,
        sampler.temperature, sampler.suppress, generator, -1 if end_id is None else end_id, read_last, made.split,
    )  # fmt: skip
    return ids, logits, _state(model, made, nexts, context, hc)
