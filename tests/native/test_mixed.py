"""A mixed run's lone row drawn ahead in the compiled kernels (mixed.h): the network's step, its
neural cache and the chain's row, mixed, several tokens a call, write the text the Python path
writes one token a step."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gentext import native
from gentext.conditions import Condition
from gentext.config import CorpusConfig, ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.inference.jobs import AHEAD
from gentext.inference.textmodel import TextModel
from gentext.models.cache import CacheModel
from gentext.models.markov import MarkovModel
from gentext.models.mixture import MixtureModel
from gentext.models.priming import reading_samples
from gentext.runconfig import RunConfig
from tests.native.counting import Counting
from tests.native.small import network, together_both
from tests.native.test_runs import REQUESTS

CHARS = ["\n", *(chr(97 + i) for i in range(26)), " ", ".", ","]


def mixed_model(kind: str, fmt: str, cache: tuple | None, mode: str, chained: bool = True) -> TextModel:
    """A network over 30 characters, with a cache (gate, similarity, theta) or without, mixed with an
    order-4 chain counted on a text of repeated words (so the chain is sure of some followers)."""
    rng = np.random.default_rng(0)
    words = [rng.integers(1, 27, rng.integers(2, 6)) for _ in range(12)]
    text = np.concatenate([np.append(words[i], 27) for i in rng.integers(0, 12, 600)])
    chain = MarkovModel(ModelConfig(kind="markov", order=4, vocab_size=len(CHARS))).fit(text)
    net = network(kind, fmt, 64, len(CHARS))
    if cache is not None:
        gate, similarity, theta = cache
        net = CacheModel(net, 24, theta, 0.3, gate, similarity).eval()
    run = RunConfig(corpus=CorpusConfig(mode=mode))
    model = MixtureModel(net, chain, 0.6) if chained else net
    return TextModel(model, CharTokenizer(CHARS), run, condition=Condition())


def both_paths(model: TextModel, counted: Counting, prompt: str, **settings) -> tuple[list, list]:
    """The texts of the Python path and of the kernels (counted), from the same prompt and settings."""
    python = model.generate(prompt, **settings)
    native.use(counted)
    try:
        return python, model.generate(prompt, **settings)
    finally:
        native.use(None)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "mingru"])
def test_a_mixed_lone_row_drawn_ahead_writes_the_token_by_token_text(kind, kernels):
    cases = [
        ("stream", dict(max_new_tokens=2 * AHEAD + 3, temperature=0)),  # greedy: no draws
        ("stream", dict(max_new_tokens=3 * AHEAD + 5, stop=["e"])),  # ends mid-way
        ("lines", dict(max_new_tokens=3 * AHEAD, temperature=1.3)),
    ]
    caches = [None, (0.0, "dot", 1.0), (0.5, "cosine", 1000.0)]  # none; heard wherever it holds something; gated
    counted, longest = Counting(kernels, "run_mixed"), 0
    for fmt, cache, (mode, settings), seed in itertools.product(["fp32", "int8"], caches, cases, range(2)):
        model = mixed_model(kind, fmt, cache, mode)
        prompt = "the cat sat on the mat. " * 2  # a prompt the cache remembers
        python = model.generate(prompt, seed=seed, **settings)
        longest = max(longest, len(python[0]))
        native.use(counted)
        try:
            compiled = model.generate(prompt, seed=seed, **settings)
            streamed = "".join(model.stream(prompt, seed=seed, **settings))
        finally:
            native.use(None)
        assert compiled == python and [streamed] == python, (fmt, cache, mode, settings, seed)
    assert longest > AHEAD + 4  # runs longer than one compiled call were compared
    assert counted.calls > 0  # and the compiled runs made them


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "mingru"])
def test_a_mixed_batch_drawn_ahead_writes_the_token_by_token_texts(kind, kernels):
    """A request's samples (a batch's run), ending at different tokens, as the Python path writes them."""
    cases = [
        ("stream", dict(num_samples=3, max_new_tokens=AHEAD + 3, temperature=0.8)),
        ("lines", dict(num_samples=20, max_new_tokens=2 * AHEAD, temperature=1.3)),  # split between threads
        ("stream", dict(num_samples=5, max_new_tokens=2 * AHEAD + 1, stop=["e"])),
    ]
    counted = Counting(kernels, "run_mixed")
    for fmt, cache, (mode, settings) in itertools.product(["fp32", "int8"], [None, (0.5, "cosine", 1000.0)], cases):
        model = mixed_model(kind, fmt, cache, mode)
        python, compiled = both_paths(model, counted, "the cat sat on the mat. ", seed=1, **settings)
        assert compiled == python, (fmt, cache, mode, settings)
    assert counted.calls > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "mingru"])
def test_a_mixed_run_under_other_settings_reads_each_token_in_one_call_to_the_python_paths_text(kind, kernels):
    """Settings that choose each token in Python (top-k, top-p, a penalty) read it in one compiled
    call (`read_mixed`), to the Python path's text, one row or many."""
    cases = [
        dict(max_new_tokens=AHEAD + 5, top_p=0.9),
        dict(max_new_tokens=AHEAD, top_k=5, temperature=0.8, num_samples=3),
        dict(max_new_tokens=AHEAD, repetition_penalty=1.3, temperature=0),
    ]
    counted = Counting(kernels, "read_mixed")
    for cache, settings in itertools.product([None, (0.5, "cosine", 1000.0)], cases):
        model = mixed_model(kind, "int8", cache, "stream")
        python, compiled = both_paths(model, counted, "the cat sat on the mat. ", seed=2, **settings)
        assert compiled == python, (cache, settings)
    assert counted.calls > 0


@pytest.mark.isa  # the loops beside ATen's vectorised softmax, log and logaddexp, on either ISA
@pytest.mark.parametrize(
    ("kind", "cache", "rows"), [("lstm", (0.5, "cosine", 1000.0), 1), ("mingru", (0.0, "dot", 1.0), 3)]
)
def test_a_mixed_run_ahead_ends_with_the_logits_and_states_of_its_tokens_read_one_by_one(kind, cache, rows, kernels):
    """The numbers, not only the draws: the logits and every state tensor after a compiled run are
    those of its ids read one token a call through `forward` on the Python path, bit for bit."""
    mixture = mixed_model(kind, "fp32", cache, "stream").model
    prompt = torch.tensor([[20, 8, 5, 27, 3, 1, 20, 27] * 3] * rows)
    with torch.inference_mode(), reading_samples():
        logits, state = mixture(prompt, None)
        native.use(kernels)
        try:
            sampler, generator = SimpleNamespace(temperature=1.0, suppress=None), torch.Generator().manual_seed(0)
            ids, ahead, ahead_state = mixture.draw_ahead(logits[:, -1], state, 40, sampler, generator, None, True)
        finally:
            native.use(None)
        for token in ids if rows == 1 else ids.clamp(min=0):
            logits, state = mixture(torch.as_tensor(token).reshape(rows, 1), state)
    assert len(ids) == 40 and torch.equal(ahead, logits[:, -1])
    assert ahead_state.tensors.keys() == state.tensors.keys()
    assert all(torch.equal(ahead_state.tensors[name], state.tensors[name]) for name in state.tensors)


@pytest.mark.slow
def test_a_cached_network_without_a_chain_runs_ahead_to_the_python_paths_text(kernels):
    """A run with a neural cache and no chain (`--mix-markov 0`, or a text too large for one) draws
    ahead through the same compiled step, ending with the cache's numbers."""
    counted = Counting(kernels, "run_mixed")
    for kind, rows in itertools.product(["lstm", "mingru"], [1, 4]):
        model = mixed_model(kind, "fp32", (0.5, "cosine", 1000.0), "stream", chained=False)
        settings = dict(max_new_tokens=2 * AHEAD + 3, num_samples=rows, temperature=0.9)
        python, compiled = both_paths(model, counted, "the cat sat on the mat. " * 2, seed=3, **settings)
        assert compiled == python, (kind, rows)
    assert counted.calls > 0


@pytest.mark.slow
@pytest.mark.parametrize("cache", [None, (0.5, "cosine", 1000.0)])
def test_mixed_requests_drawing_together_run_ahead_to_the_python_paths_texts(cache, kernels):
    """Requests under the same plain settings in one batch of a mixed model (`run_mixed`, each row's
    numbers from its own request's generator): the Python path's token-by-token texts. Prompts of one
    length: a cache's window grows with the text, so rows share a cohort where their prompts did."""
    model = mixed_model("lstm", "int8", cache, "stream")
    requests = [(f"the cat sat on the mat. {p[:1] or ' '}", {**s, "temperature": 0.9}) for p, s in REQUESTS]
    python, compiled, calls = together_both(model, requests, kernels)
    assert compiled == python
    assert max(calls) > 1  # requests ran ahead together (here two end at the first token)
