"""A Kneser-Ney chain's generation rows in the compiled kernels (chain.h): the Python path's numbers
bit for bit, which are the sequence pass's."""

import numpy as np
import pytest
import torch

from gentext import native
from gentext.config import ModelConfig
from gentext.models.markov import MarkovModel
from tests.native.counting import Counting


def stepped(chain: MarkovModel, ids: torch.Tensor) -> torch.Tensor:
    """The chain's log-probabilities read token by token as generation reads them (B, T, V)."""
    state, steps = None, []
    with torch.inference_mode():
        for t in range(ids.shape[1]):
            logits, state = chain(ids[:, t : t + 1], state)
            steps.append(logits)
    return torch.cat(steps, dim=1)


@pytest.mark.isa  # ATen's log and numpy's recursion, on either ISA
@pytest.mark.parametrize(("order", "vocab", "rows"), [(5, 12, 1), (8, 65, 3), (3, 40, 40)])
def test_a_chains_rows_give_the_python_paths_numbers(kernels, order, vocab, rows):
    rng = np.random.default_rng(order)
    text = rng.integers(0, vocab // 2, 20_000)
    text[::5] = 3  # frequent contexts, rare ones and (the upper half of the vocabulary) unseen ones
    ids = torch.from_numpy(np.concatenate([text[:60].reshape(1, -1)] * rows) if rows > 1 else text[None, :60])
    ids[:, 30:] = torch.from_numpy(rng.integers(0, vocab, (rows, 30)))  # seen text, then new contexts
    config = ModelConfig(kind="markov", order=order, vocab_size=vocab)
    python = stepped(MarkovModel(config).fit(text), ids)
    counted = Counting(kernels, "ChainRows")
    native.use(counted)
    try:
        chain = MarkovModel(config).fit(text)
        compiled = stepped(chain, ids)
        again = stepped(chain, ids)  # every row now read from the kept ones
    finally:
        native.use(None)
    assert counted.calls == 1  # the compiled rows made the steps, built once for the chain's tables
    assert torch.equal(compiled, python) and torch.equal(again, python)
    with torch.inference_mode():
        assert torch.equal(chain(ids)[0], python)  # and they are the sequence pass's
