"""A neural cache (Grave, Joulin and Usunier, 2017) on a recurrent network, behind the one contract:

    P(w | history) = (1 - lambda) P_net(w | h_t) + lambda P_cache(w | h_t)
    P_cache(w | h_t) = sum over the last `window` positions i with x_{i+1} = w of softmax_i(theta sim(h_t, h_i))

Text repeats itself — a name, a rare word, a phrase met a hundred tokens ago — and the network's
weights cannot learn a document's own words; its recent outputs can point at them. Nothing is
trained: the window, theta and lambda are chosen on the run's validation text after training
(training/caching.py), and the cache is kept only where it lowers that text's loss. It is cheap at
inference: one (window x H) product per token, the window appended to in place.

Over characters and subwords (training/caching.py, `cache_kind`; over words the paper's cache, whose
spread falls on whole words) the similarity is the cosine of the two outputs (the paper's dot product
favours the largest outputs over the closest), and the cache is heard only where it is all but
certain: where its most likely token holds at least `gate` of its probability (the past states
close to this one were followed by that token) and it holds at least half a window of given
text. Heard everywhere, a sample drew from its spread over the followers of every like state,
and inside a speaker's name those are the capitals of every name in the window ("ANGOLO:",
"ANTIGO:"); the held-out loss rewards that spread and a sample pays for it. A run saved before
either reads the dot product and gate 0: heard wherever it holds something.

The state is the network's (names prefixed `net.`) and the cache's: `cache.keys` (B, window, H),
the last outputs, and `cache.next` (B, window), the token that followed each (EMPTY before a slot
holds an output; PENDING for the newest, whose follower comes with the next call). Beams, batches,
streams and the server carry it as any other state.

It remembers the text it is given — a prompt, text being scored or trained on — and not the
model's own samples (models/priming.py: the engine's steps read them): a cache fed its outputs
copies them back, and free samples looped ("of tfoly of tfoly"). A generation's tokens
still read the cache of its prompt.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gentext import native
from gentext.models import mixedrun
from gentext.models.priming import is_reading_samples
from gentext.models.room import append, tail
from gentext.models.state import State, nested, part, part_tensors

CHUNK = 512  # queries attended at once: a long text's (T, window + T) scores never exist whole
WIDE_VOCAB = 4096  # above this, a token's share is summed over the tokens the slots hold, not the vocabulary
DIMS = {"keys": 0, "next": 0}  # the cache's tensors: batch first
EMPTY, PENDING = -2, -1  # a slot's "next" before any output filled it / for the newest output


def window_state(keys: torch.Tensor, nexts: torch.Tensor) -> State:
    """The cache's part of a state: the window's outputs (B, window, H) and the token after each (B, window)."""
    return State({"keys": keys, "next": nexts}, DIMS)


def empty_cache(batch: int, window: int, hidden: int, device) -> State:
    keys = torch.zeros(batch, window, hidden, device=device)
    return window_state(keys, torch.full((batch, window), EMPTY, device=device))


def _band(queries: torch.Tensor, keys: torch.Tensor, nexts: torch.Tensor):
    """Each query t against the `window` slots before it, keys[t .. t + window - 1]: queries
    (B, T, H), keys (B, window + T - 1, H), nexts (B, window + T - 1) -> the products (B, T, K)
    (K = window), the slots' next tokens (B, T, K), which slots hold an output (B, T, K) and
    whether any does (B, T)."""
    length, window = queries.shape[1], keys.shape[1] - queries.shape[1] + 1
    band = torch.arange(length, device=queries.device)[:, None] + torch.arange(window, device=queries.device)
    band = band.expand(queries.shape[0], -1, -1)  # (B, T, K) slot indices
    dots = torch.bmm(queries.float(), keys.float().transpose(1, 2)).gather(2, band)
    slot_next = nexts[:, None, :].expand(-1, length, -1).gather(2, band)
    valid = slot_next >= 0
    return dots, slot_next, valid, valid.any(-1)


def _same_slots(queries: torch.Tensor, keys: torch.Tensor, nexts: torch.Tensor, window: int):
    """`_band` for queries that all read the first `window` slots: one query a row (its band is the
    slots before the newest) or the model's own samples (the window as it stands). No index is
    built and nothing gathered, and the product reads each row's slots as a matrix times a vector
    (half the time of the vector times the transposed matrix at 64 rows)."""
    dots = torch.bmm(keys.narrow(1, 0, window), queries.float().transpose(1, 2)).transpose(1, 2)  # (B, T, K)
    slot_next = nexts[:, None, :window].expand(-1, queries.shape[1], -1)
    valid = slot_next >= 0
    return dots, slot_next, valid, valid.any(-1)


def _weights(dots: torch.Tensor, valid: torch.Tensor, filled: torch.Tensor, theta: float) -> torch.Tensor:
    """softmax(theta * products) over the filled slots (empty ones weigh 0; all 0 where none is filled)."""
    scores = (theta * dots).masked_fill(~valid, -math.inf).masked_fill(~filled[..., None], 0.0)
    return torch.softmax(scores, dim=-1) * valid


def _top_share(weights: torch.Tensor, slot_next: torch.Tensor, vocab: int) -> torch.Tensor:
    """The share of the cache's probability its most likely token holds (B, T), from the slots'
    weights and next tokens (B, T, K): the weights summed per token (over the tokens the slots hold
    where the vocabulary is wide: a (T, V) sum of words would dwarf the (T, K) products)."""
    if vocab > WIDE_VOCAB:
        slot_next = torch.unique(slot_next, return_inverse=True)[1]
        vocab = int(slot_next.max()) + 1 if slot_next.numel() else 1
    return weights.new_zeros(*weights.shape[:2], vocab).scatter_add_(2, slot_next, weights).amax(-1)


def _heard(valid: torch.Tensor, filled: torch.Tensor, top: torch.Tensor | None, gate: float) -> torch.Tensor:
    """Where the cache is mixed in (B, T): it holds something and, a gate given, its top token's
    share reaches the gate among at least half a window of outputs (`valid`: (B, T, K)). Among a
    few, one is always far closer than the rest: a cache holding the four outputs of a prompt "The "
    was sure at every draw and spelled "the" as "ohe"."""
    if gate <= 0:
        return filled
    return filled & (top >= gate) & (2 * valid.sum(-1) >= valid.shape[-1])


def cache_keys(y: torch.Tensor, similarity: str) -> torch.Tensor:
    """The outputs as the cache compares them: unit length for the cosine, as they are for the dot product."""
    return nn.functional.normalize(y.float(), dim=-1) if similarity == "cosine" else y


def _by_chunk(y: torch.Tensor, keys: torch.Tensor, nexts: torch.Tensor, window: int, reduce) -> tuple:
    """Each CHUNK of queries against its band of slots (`_band`: bounded memory on long texts),
    `reduce(dots, slot_next, valid, filled, targets_of_chunk)` -> its result per chunk, and the fills.
    One loop for the running cache and for the fit over many thetas."""
    if y.shape[1] == 1:
        dots, slot_next, valid, filled = _same_slots(y, keys, nexts, window)
        return [reduce(dots, slot_next, valid, filled, slice(0, 1))], filled
    results, fills = [], []
    for start in range(0, y.shape[1], CHUNK):
        end = min(start + CHUNK, y.shape[1])
        band = slice(start, end + window - 1)
        dots, slot_next, valid, filled = _band(y[:, start:end], keys[:, band], nexts[:, band])
        results.append(reduce(dots, slot_next, valid, filled, slice(start, end)))
        fills.append(filled)
    return results, torch.cat(fills, dim=1)


def _history(cache: State, y: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every output beside the token that followed it: the cached slots, then this call's (the
    newest output's follower is not known yet: PENDING until the next call fills it in). The
    outputs are appended in place in inference (models/room.py: copying the window every token was
    most of a token's time); the followers, an eighth of their size and one rewritten, are copied."""
    keys = cache.tensors["keys"]
    keys = append(keys, y.float(), 1, room_for=max(64, keys.shape[1] // 4))  # (B, window + T, H)
    old = cache.tensors["next"]
    newest = torch.where(old[:, -1:] == EMPTY, EMPTY, ids[:, :1])  # the last output's follower, if it has one
    nexts = torch.cat([old[:, :-1], newest, ids[:, 1:], ids.new_full((ids.shape[0], 1), PENDING)], dim=1)
    return keys, nexts


def cache_probs(
    y, ids, cache: State, theta: float, vocab: int, targets=None, remember: bool = True, gate: float = 0.0
) -> tuple:
    """The cache's distribution after each position (B, T, V), or its probability of `targets`
    (B, T); where the cache is heard (B, T): it has something and, a gate given, its top token
    holds at least `gate` of it among half a window of outputs (`_heard`); the cache after the last
    position. Without `remember` (the model's own samples) the positions read the window as it
    stands and are not kept, and the newest kept output loses its follower: what follows it is no
    longer given text."""
    window = cache.tensors["keys"].shape[1]

    def reduce(dots, slot_next, valid, filled, span):
        weights, slot_next = _weights(dots, valid, filled, theta), slot_next.clamp(min=0)
        if targets is None:
            probs = weights.new_zeros(*weights.shape[:2], vocab).scatter_add_(2, slot_next, weights)
            return probs, _heard(valid, filled, probs.amax(-1) if gate > 0 else None, gate)
        top = _top_share(weights, slot_next, vocab) if gate > 0 else None
        return (weights * (slot_next == targets[:, span, None])).sum(-1), _heard(valid, filled, top, gate)

    if not remember:
        keys, nexts = cache.tensors["keys"], cache.tensors["next"]
        dots, slot_next, valid, filled = _same_slots(y, keys, nexts, window)
        if bool((nexts[:, -1] == PENDING).any()):  # the first sample only: later ones keep the window as is
            nexts = torch.cat([nexts[:, :-1], nexts[:, -1:].masked_fill(nexts[:, -1:] == PENDING, EMPTY)], dim=1)
        kept = window_state(keys, nexts)
        return *reduce(dots, slot_next, valid, filled, slice(None)), kept
    keys, nexts = _history(cache, y, ids)
    chunks, _ = _by_chunk(y, keys, nexts, window, reduce)
    probs, heard = (torch.cat(column, dim=1) for column in zip(*chunks, strict=True))
    kept = window_state(tail(keys, window, 1), nexts[:, -window:])
    return probs, heard, kept


def fit_probs(y, ids, targets, window: int, thetas, gate: float = 0.0, vocab: int = 0) -> tuple:
    """For choosing theta (training/caching.py): an empty cache's probability of each target and
    where it is heard (`cache_probs`), one row per theta: (len(thetas), B, T) each. The products,
    most of the cost, are computed once for all thetas; `vocab` is needed with a gate."""
    keys, nexts = _history(empty_cache(y.shape[0], window, y.shape[-1], y.device), y, ids)

    def reduce(dots, slot_next, valid, filled, span):
        hit, followers = valid & (slot_next == targets[:, span, None]), slot_next.clamp(min=0)
        probs, heard = [], []
        for theta in thetas:
            weights = _weights(dots, valid, filled, theta)
            probs.append((weights * hit).sum(-1))
            heard.append(_heard(valid, filled, _top_share(weights, followers, vocab) if gate > 0 else None, gate))
        return torch.stack(probs), torch.stack(heard)

    chunks, _ = _by_chunk(y, keys, nexts, window, reduce)
    return tuple(torch.cat(column, dim=2) for column in zip(*chunks, strict=True))


class CacheModel(nn.Module):
    """`net` (a recurrent kind: it has `features` and `readout`) with a cache of its last `window`
    outputs, sharpness `theta`, weight `weight` (lambda) where it is heard, `gate`: the share of
    its probability its top token must hold for it to be heard (0: wherever it holds something),
    and `similarity`: "cosine" or "dot" (the product)."""

    def __init__(self, net, window: int, theta: float, weight: float, gate: float = 0.0, similarity: str = "dot"):
        super().__init__()
        self.net, self.window, self.theta, self.weight = net, int(window), float(theta), float(weight)
        self.gate, self.similarity = float(gate), similarity
        self.config, self.carries_state = net.config, net.carries_state
        self._logs = (math.log(max(1.0 - self.weight, 1e-12)), math.log(max(self.weight, 1e-12)))
        if hasattr(net, "set_weight_format"):  # a weight format is the network's alone
            self.set_weight_format = net.set_weight_format

    def _empty(self, batch: int, device) -> State:
        return empty_cache(batch, self.window, self.config.hidden_size, device)

    def initial_state(self, batch: int, device=None, condition=None) -> State:
        net = self.net.initial_state(batch, device, condition=condition)
        return nested({"net": net, "cache": self._empty(batch, next(iter(net.tensors.values())).device)})

    def state_from_tensors(self, tensors: dict[str, torch.Tensor]) -> State:
        net = self.net.state_from_tensors(part_tensors(tensors, "net"))
        return nested({"net": net, "cache": State(part_tensors(tensors, "cache"), DIMS)})

    def parts(self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """The two components apart: the network's log-probabilities and the cache's (the
        network's where the cache is not heard), of the vocabulary (B, T, V) or of `targets`
        (B, T); where the cache is heard; the state after. Fitting the mixture's weights reads
        them (training/mixing.py)."""
        cache = part(state, "cache") or self._empty(ids.shape[0], ids.device)
        y, net_state = self.net.features(ids, part(state, "net"))
        net_logp = self.net.readout(y, targets).float()
        remember = not is_reading_samples()
        vocab = net_logp.shape[-1] if targets is None else self.config.vocab_size
        keys = cache_keys(y, self.similarity)
        cache_p, filled, cache = cache_probs(keys, ids, cache, self.theta, vocab, targets, remember, self.gate)
        # clamped: log(0) where the cache holds no such token would make the gradient NaN (0 * inf; dynamic
        # evaluation takes one), and e^-69 is far below what float32 adds to the network's share
        filled = filled[..., None] if targets is None else filled  # not heard (or nothing held): the network alone
        cache_logp = torch.where(filled, cache_p.clamp_min(1e-30).log(), net_logp)
        return net_logp, cache_logp, filled, nested({"net": net_state, "cache": cache})

    window_state = staticmethod(window_state)  # what mixedrun.py builds the state after a compiled call with

    def forward(self, ids: torch.Tensor, state: State | None = None, targets: torch.Tensor | None = None):
        """As every kind's: log-probabilities of the mixture (B, T, V), or of `targets` (B, T). A
        token of the model's own samples takes one compiled call where there is one (mixedrun.py)."""
        if targets is None and ids.shape[1] == 1 and is_reading_samples():
            inference = not self.training and not torch.is_grad_enabled()
            sampled = mixedrun.read_sample(self, ids, state) if inference else None
            if sampled is None:
                sampled = self._sampled(ids, state)
            if sampled is not None:
                return sampled
        net_logp, cache_logp, filled, state = self.parts(ids, state, targets)
        with_cache = torch.logaddexp(net_logp + self._logs[0], cache_logp + self._logs[1])
        return torch.where(filled, with_cache, net_logp), state  # not heard: the network alone

    def _sampled(self, ids: torch.Tensor, state: State | None):
        """`forward` for a token of the model's own samples (one a row, the window read as it
        stands) with the cache's part in one compiled call (native/cache.h): the same numbers;
        None where the kernels are not loaded or there is no window yet."""
        kernels, cache = native.kernels(), part(state, "cache")
        if kernels is None or cache is None or ids.device.type != "cpu":
            return None
        y, net_state = self.net.features(ids, part(state, "net"))
        net_logp = self.net.readout(y).float()
        keys, nexts = cache.tensors["keys"], cache.tensors["next"]
        cosine = self.similarity == "cosine"
        out, nexts = kernels.cache_sample(y.float(), keys, nexts, net_logp, self.theta, self.gate, cosine, *self._logs)
        return out, nested({"net": net_state, "cache": window_state(keys, nexts)})

    def draw_ahead(self, logits, state: State, count: int, sampler, generator, end_id, read_last: bool):
        """Up to `count` plainly sampled tokens of a request's rows drawn and read in one compiled
        call (models/mixedrun.py), as MixtureModel's; None where that call is not here."""
        return mixedrun.draw_ahead(self, logits, state, count, sampler, generator, end_id, read_last)

    def num_parameters(self) -> int:
        return self.net.num_parameters()


def holds_cache(model: nn.Module | None) -> bool:
    """Is there a neural cache in this model (itself, or inside a mixture)?"""
    while model is not None and not isinstance(model, CacheModel):
        model = getattr(model, "net", None)
    return model is not None
