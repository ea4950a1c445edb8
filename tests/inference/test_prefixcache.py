"""The prefix cache (inference/prefixcache.py): requests sharing a long prefix start from its
state, the text is the same bit for bit, and memory stays within its budget."""

import pytest

import gentext
from gentext.inference.prefixcache import BLOCK, PrefixCache
from tests.conftest import TINY_SETTINGS, TINY_TEXT


def _texts(model, prompts, cache):
    model.prefix_cache = cache
    return [model.generate(p, seed=i, max_new_tokens=30) for i, p in enumerate(prompts)]


def test_requests_sharing_a_prefix_start_from_its_state_and_write_the_same_text(trained_run):
    model = gentext.load(trained_run)
    assert model.prefix_cache is not None  # on by default
    preamble = TINY_TEXT[: 3 * BLOCK + 20]
    prompts = [preamble + ending for ending in ("The ", "A stitch ", "naïve ", "The quick")]
    alone = _texts(model, prompts, None)
    cache = PrefixCache(8 << 20)
    assert _texts(model, prompts, cache) == alone
    assert cache.hits == 3  # the second, third and fourth started from the preamble's last block
    assert model.generate_many(prompts, seed=5, max_new_tokens=20) == [
        model.generate(p, seed=5, max_new_tokens=20)[0] for p in prompts
    ]  # batched requests go through it too


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gru", "mingru", "markov", "transformer"])
def test_every_kind_writes_the_same_text_cached_or_not(tmp_path, tiny_corpus, kind):
    extra = dict(num_heads=2, context=64) if kind == "transformer" else {}
    gentext.train(tmp_path / kind, paths=[str(tiny_corpus)], steps=3, model=kind, **{**TINY_SETTINGS, **extra})
    model = gentext.load(tmp_path / kind)
    prompts = [TINY_TEXT[: 2 * BLOCK + 5] + end for end in ("The ", "A ")] * 2  # the repeats: whole prompts kept
    assert _texts(model, prompts, PrefixCache(8 << 20)) == _texts(model, prompts, None)


def test_an_identical_prompt_needs_no_network_call(trained_run, monkeypatch):
    model = gentext.load(trained_run)
    prompt = TINY_TEXT[: 2 * BLOCK + 3]
    first = model.generate(prompt, temperature=0, max_new_tokens=10)
    calls = []
    forward = type(model.model).forward
    monkeypatch.setattr(
        type(model.model), "forward", lambda self, ids, *a, **k: calls.append(ids.shape) or forward(self, ids, *a, **k)
    )
    assert model.generate(prompt, temperature=0, max_new_tokens=10) == first
    assert calls and all(shape[1] == 1 for shape in calls)  # only the generated tokens were read


def test_the_cache_stays_within_its_budget_and_drops_the_least_recent(trained_run):
    model = gentext.load(trained_run)
    model.prefix_cache = cache = PrefixCache(60_000)
    prompts = [TINY_TEXT[i : i + BLOCK + 10] for i in range(40)]
    for prompt in prompts:
        model.generate(prompt, max_new_tokens=1)
    assert 0 < cache.size <= 60_000 and len(cache.entries) < 2 * len(prompts)
    assert tuple(model.tokenizer.encode(prompts[-1]).tolist()) in cache.entries  # the newest stays
    assert tuple(model.tokenizer.encode(prompts[0]).tolist()) not in cache.entries  # the oldest went


def test_prefix_cache_mb_zero_turns_it_off(trained_run):
    assert gentext.load(trained_run, prefix_cache_mb=0).prefix_cache is None
