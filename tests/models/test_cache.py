"""A neural cache on a recurrent network, its arithmetic and its fit (models/cache.py,
training/caching.py); runs that keep one are in test_cached_runs.py."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gentext.config import ModelConfig
from gentext.models import build_model
from gentext.models.cache import EMPTY, PENDING, CacheModel, _top_share, cache_probs, empty_cache, fit_probs
from gentext.models.priming import reading_samples
from gentext.training.caching import GATE, fit_cache


def small_net(kind: str = "lstm", vocab: int = 9) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, vocab_size=vocab, embed_size=8, hidden_size=12, num_layers=2)).eval()


@pytest.mark.parametrize(("kind", "similarity"), [("lstm", "dot"), ("mingru", "dot"), ("lstm", "cosine")])
def test_the_cache_is_the_weighted_sum_of_the_network_and_a_softmax_over_its_recent_outputs(kind, similarity):
    net, window, theta, lam = small_net(kind), 5, 0.7, 0.25
    ids = torch.randint(0, 9, (2, 14), generator=torch.Generator().manual_seed(1))
    got, _ = CacheModel(net, window, theta, lam, similarity=similarity)(ids)
    with torch.inference_mode():
        h, _ = net.features(ids)
        h = torch.nn.functional.normalize(h, dim=-1) if similarity == "cosine" else h  # the cosine: unit outputs
        p_net = torch.softmax(net(ids)[0].double(), -1)
    for b in range(2):
        for t in range(14):
            slots = range(max(0, t - window), t)  # outputs before t, each followed by ids[b, i + 1]
            if not slots:  # nothing cached yet: the network alone
                expected = p_net[b, t]
            else:
                weights = torch.softmax(torch.stack([theta * h[b, t].double() @ h[b, i].double() for i in slots]), 0)
                p_cache = torch.zeros(9, dtype=torch.float64)
                for w, i in zip(weights, slots, strict=True):
                    p_cache[ids[b, i + 1]] += w
                expected = (1 - lam) * p_net[b, t] + lam * p_cache
            assert torch.allclose(got[b, t].exp().double(), expected, atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(2, 14), atol=1e-5)  # a distribution at every position


def test_steps_append_to_the_window_in_place_and_a_state_continued_twice_keeps_each_apart():
    """Generation writes each new output into the window's buffer (models/room.py) instead of
    copying the window; a second continuation of one state (a shared prompt, beams) copies first,
    so neither sees the other's outputs: each equals the whole text read at once."""
    model, window = CacheModel(small_net(), 6, 0.7, 0.25), 6
    prompt, first, second = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]), [3, 1, 4, 1, 5], [2, 7]
    with torch.inference_mode():
        _, state = model(prompt)
        _, a = model(torch.tensor([first[:1]]), state)
        _, b = model(torch.tensor([first[1:2]]), a)
        assert _buffer(b) == _buffer(a) and b.tensors["cache.keys"].shape[1] == window  # written in place
        for token in first[2:4]:
            _, b = model(torch.tensor([[token]]), b)
        other, _ = model(torch.tensor([second]), state)  # the prompt's state again
        last, _ = model(torch.tensor([first[4:]]), b)
        whole_other, _ = model(torch.cat([prompt, torch.tensor([second])], 1))
        whole_first, _ = model(torch.cat([prompt, torch.tensor([first])], 1))
    assert torch.allclose(other[:, -1], whole_other[:, -1], atol=1e-5)
    assert torch.allclose(last[:, -1], whole_first[:, -1], atol=1e-5)


def test_the_models_own_samples_read_the_cache_but_are_not_kept_in_it():
    """Reading its own samples (the engine's steps), the model mixes in the cache of the given text
    as it stands: the samples are not added, and the last given output's follower (a sample) is
    never counted, not even once given text is read again."""
    net, theta, lam = small_net(), 0.7, 0.25
    model, prompt, samples = CacheModel(net, 6, theta, lam), [1, 2, 3, 4, 5], [3, 1]
    with torch.inference_mode():
        _, state = model(torch.tensor([prompt]))
        got, after = [], state
        with reading_samples():
            for token in samples:
                logp, after = model(torch.tensor([[token]]), after)
                got.append(logp[0, -1])
        h, _ = net.features(torch.tensor([prompt + samples]))
        p_net = torch.softmax(net(torch.tensor([prompt + samples]))[0][0].double(), -1)
        _, later = model(torch.tensor([[7, 8]]), after)  # given text again
    assert torch.equal(after.tensors["cache.keys"], state.tensors["cache.keys"])
    for step, t in enumerate(range(len(prompt), len(prompt) + len(samples))):
        slots = range(len(prompt) - 1)  # the prompt's outputs whose follower was given
        weights = torch.softmax(torch.stack([theta * h[0, t].double() @ h[0, i].double() for i in slots]), 0)
        p_cache = torch.zeros(9, dtype=torch.float64)
        for w, i in zip(weights, slots, strict=True):
            p_cache[prompt[i + 1]] += w
        assert torch.allclose(got[step].exp().double(), (1 - lam) * p_net[t] + lam * p_cache, atol=1e-5)
    # the window's followers: the prompt's (the last one's a sample: none), then the given text's
    assert later.tensors["cache.next"][0].tolist() == [3, 4, 5, EMPTY, 8, PENDING]


def _buffer(state) -> int:
    return state.tensors["cache.keys"].untyped_storage().data_ptr()


class ContextNet(torch.nn.Module):
    """A network whose output is its last three tokens, one-hot, and whose prediction is uniform:
    the same context gives the same output, another one at least a third of the way round. A
    trained network's outputs tell contexts apart; a small random one's are too alike for its cache
    ever to be sure."""

    def __init__(self, vocab: int):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)

    def features(self, ids, state=None):
        context = torch.cat([ids.new_zeros(ids.shape[0], 2) if state is None else state, ids], 1)
        y = torch.nn.functional.one_hot(context.unfold(1, 3, 1), self.config.vocab_size).flatten(2).float()
        return y, context[:, -2:]

    def readout(self, y, targets=None):
        uniform = torch.full((*y.shape[:2], self.config.vocab_size), -math.log(self.config.vocab_size))
        return uniform if targets is None else uniform.gather(2, targets[..., None])[..., 0]


def test_fitting_keeps_a_cache_where_text_repeats_and_none_where_it_cannot_help():
    motif = np.random.default_rng(0).integers(0, 50, 40)
    repeated = np.tile(motif, 30)  # the same 40 tokens again and again: what a cache is for
    noise = np.random.default_rng(1).integers(0, 50, 1200)  # never repeats in order: nothing to copy
    heard = {}
    for gate, net in ((0.0, small_net(vocab=50)), (GATE, ContextNet(50))):
        fitted = fit_cache(
            net, repeated, 16, "cpu", 100, level="char", gate=gate
        )  # tries 25, 50, 100: 25 cannot reach back
        assert fitted is not None and fitted["val_loss"] < fitted["net_val_loss"] - 0.3  # a random net: flat outputs
        assert fitted["window"] in (50, 100) and 0 < fitted["weight"] <= 1 and fitted["gate"] == gate
        heard[gate] = fitted["heard"]
        assert fit_cache(net, noise, 16, "cpu", 100, level="char", gate=gate) is None
    # gated: not before the motif's first repeat (no context seen yet); ungated: wherever it holds something
    assert 0 < heard[GATE] <= 1 - len(motif) / (len(repeated) - 1) < heard[0.0]


def test_characters_and_subwords_get_the_gated_cosine_cache_and_words_the_papers():
    """Over words the cache's spread falls on whole words, and the paper's cache (the dot product,
    heard everywhere) held out far better than a gated one; over characters and subwords it spells
    new names from pieces of old ones. The level decides, not the vocabulary's size."""
    motif = np.random.default_rng(0).integers(0, 300, 40)
    fitted = fit_cache(small_net(vocab=300), np.tile(motif, 30), 16, "cpu", 100, level="word")
    assert fitted is not None and (fitted["similarity"], fitted["gate"]) == ("dot", 0.0) and fitted["heard"] > 0.9
    for level, vocab in (("char", 50), ("bpe", 300)):
        fitted = fit_cache(ContextNet(vocab), np.tile(motif % vocab, 30), 16, "cpu", 100, level=level)
        assert fitted is not None and (fitted["similarity"], fitted["gate"]) == ("cosine", GATE), level


def test_the_fit_scores_every_theta_as_the_running_cache_does():
    # fit_probs computes a window's products once for all thetas; each row must be what the cache
    # itself gives that theta (over more than one chunk of queries), and heard where it is
    torch.manual_seed(0)
    y, ids, targets = torch.randn(1, 700, 8), torch.randint(0, 9, (1, 700)), torch.randint(0, 9, (1, 700))
    for gate in (0.0, 0.9):
        probs, heard = fit_probs(y, ids, targets, 50, (0.3, 2.0, 8.0), gate, 9)
        for theta, row, row_heard in zip((0.3, 2.0, 8.0), probs, heard, strict=True):
            empty = empty_cache(1, 50, 8, "cpu")
            expected, expected_heard, _ = cache_probs(y, ids, empty, theta, 9, targets, gate=gate)
            assert torch.allclose(row, expected, atol=1e-6) and torch.equal(row_heard, expected_heard)
        assert not torch.allclose(probs[0], probs[1])  # the thetas differ
        assert bool(heard[..., 1:].all()) == (gate == 0)  # ungated: wherever it holds something
        assert bool(heard[2].any())  # gated: the sharpest theta is sure somewhere


def test_the_cache_is_heard_only_where_its_top_token_holds_the_gate():
    """Gated, the model is the ungated mixture where the cache's most likely token holds at least
    `gate` of its probability and the network alone elsewhere; scoring given tokens gates as the
    whole distribution does (what evaluation reads is what generation draws from)."""
    net, ids = small_net(), torch.randint(0, 9, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        p_net = net(ids)[0].log_softmax(-1)
        y, _ = net.features(ids)
        p_cache, filled, _ = cache_probs(y, ids, empty_cache(2, 12, 12, "cpu"), 200.0, 9)
        ungated, _ = CacheModel(net, 12, 200.0, 0.4)(ids)
        gated, _ = CacheModel(net, 12, 200.0, 0.4, gate=0.8)(ids)
        scored, _ = CacheModel(net, 12, 200.0, 0.4, gate=0.8)(ids[:, :-1], targets=ids[:, 1:])
    half_held = torch.arange(40) >= 6  # from the sixth output on, the window of 12 holds half its outputs
    heard = filled & (p_cache.amax(-1) >= 0.8) & half_held
    assert 0 < int(heard.sum()) < int((filled & half_held).sum())  # some positions sure, some not
    assert bool((filled[:, 1:6] & (p_cache[:, 1:6].amax(-1) >= 0.8)).any())  # sure among a few: not heard
    assert torch.allclose(gated[heard], ungated[heard]) and torch.allclose(gated[~heard], p_net[~heard], atol=1e-6)
    assert torch.allclose(scored, gated[:, :-1].gather(2, ids[:, 1:, None])[..., 0], atol=1e-6)


def test_the_top_share_over_the_slots_tokens_is_the_share_over_the_vocabulary():
    weights = torch.softmax(torch.randn(2, 5, 30, generator=torch.Generator().manual_seed(0)), -1)
    followers = torch.randint(0, 7, (2, 5, 30), generator=torch.Generator().manual_seed(1)) * 1000  # ids up to 6,000
    by_hand = torch.tensor([[max(float(w[f == t].sum()) for t in f.unique()) for w, f in zip(ws, fs, strict=True)]
                            for ws, fs in zip(weights, followers, strict=True)])  # fmt: skip
    assert torch.allclose(_top_share(weights, followers, 7000), by_hand)  # a wide vocabulary: the slots' tokens
    assert torch.allclose(_top_share(weights, followers // 1000, 7), by_hand)  # a narrow one: the vocabulary
