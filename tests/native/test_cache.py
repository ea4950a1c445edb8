"""A neural cache's sampled token in the compiled kernels (cache.h): the Python path's numbers bit for
bit, and the window's followers kept as the Python path keeps them."""

import itertools

import pytest
import torch

from gentext import native
from gentext.models.cache import CacheModel
from gentext.models.priming import reading_samples
from gentext.models.state import part
from tests.native.counting import Counting
from tests.native.small import network


def sampled(model: CacheModel, prompt: torch.Tensor, tokens: torch.Tensor) -> tuple[list, int]:
    """The model's log-probabilities and cache followers after a prompt (the cache remembers it),
    then token by token as its own samples (it does not); and how often the cache was heard then."""
    heard = 0
    with torch.inference_mode():
        out, state = model(prompt, None)
        seen = [(out, part(state, "cache").tensors["next"])]
        with reading_samples():
            for t in range(tokens.shape[1]):
                heard += int(model.parts(tokens[:, t : t + 1], state)[2].sum())  # the Python path's gate
                out, state = model(tokens[:, t : t + 1], state)
                seen.append((out, part(state, "cache").tensors["next"]))
    return seen, heard


@pytest.mark.slow
@pytest.mark.isa  # the loops beside ATen's vectorised norm, softmax, log and logaddexp, on either ISA
@pytest.mark.parametrize("call", ["read_mixed", "cache_sample"])
def test_a_caches_sampled_token_gives_the_python_paths_numbers(kernels, call):
    """The whole token in one call (`read_mixed`: the network's step, then the cache), and the
    cache's part alone (`cache_sample`: where the network has no compiled step, as an adaptive head)."""
    counted, heard = Counting(kernels, call), 0
    rows, vocab = 3, 30
    generator = torch.Generator().manual_seed(0)
    # a prompt shorter than the window (empty slots) and one that fills it; repeated text, so that
    # a sharp cache is sure of some followers and heard past the gate
    for length, (gate, similarity, theta) in itertools.product(
        (5, 40), [(0.0, "dot", 1.0), (0.0, "cosine", 3.0), (0.99999, "cosine", 100.0), (0.5, "cosine", 1000.0)]
    ):
        pattern = torch.randint(1, vocab, (rows, 4), generator=generator)
        prompt = pattern.repeat(1, length // 4 + 1)[:, :length]
        tokens = pattern.repeat(1, 3)
        model = CacheModel(network("lstm", "fp32", 64, vocab), 16, theta, 0.3, gate, similarity).eval()
        if call == "cache_sample":
            model.net.run_step = lambda: None  # no compiled step for the network: the cache's call alone
        python, times = sampled(model, prompt, tokens)
        native.use(counted)
        try:
            compiled, _ = sampled(model, prompt, tokens)
        finally:
            native.use(None)
        for (a, n), (b, m) in zip(python, compiled, strict=True):
            assert torch.equal(a, b) and torch.equal(n, m), (length, gate, similarity)
        heard += times if gate > 0 else 0
    assert counted.calls > 0  # the compiled cache made the sampled tokens
    assert heard > 0  # and a gated cache was heard in some of them
