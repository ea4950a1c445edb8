"""A sequence read through the step in one compiled call (evaluation in a weight format, a prompt
read in the step's format) gives the numbers of the Python loop over its tokens."""

import pytest
import torch

from gentext import native
from gentext.models.weights import fast_formats
from tests.native.counting import Counting
from tests.native.small import network


def _read(kind: str, fmt: str, ids: torch.Tensor, targets: torch.Tensor, module) -> list[torch.Tensor]:
    """Logits, log P(targets) and the state after `ids`, the sequences stepped in `fmt`."""
    native.use(module)
    try:
        model = network(kind, fmt)
        model.set_weight_format(fmt, evaluate=True)
        with torch.inference_mode():
            logits, state = model(ids)
            scored, _ = model(ids, targets=targets)
    finally:
        native.use(None)
    return [logits, scored, *state.tensors.values()]


@pytest.mark.slow
@pytest.mark.isa
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "mingru"])
def test_a_sequence_read_in_one_compiled_call_gives_the_token_loops_numbers(kind, kernels):
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 30, (3, 17), generator=generator)
    targets = torch.randint(0, 30, (3, 17), generator=generator)
    counted = Counting(kernels, "read")
    formats = [f for f in fast_formats(torch.device("cpu")) if f != "fp32"]  # fp32 reads with nn.LSTM
    assert formats
    for fmt in formats:
        for rows in (1, 3):
            python = _read(kind, fmt, ids[:rows], targets[:rows], None)
            compiled = _read(kind, fmt, ids[:rows], targets[:rows], counted)
            assert python[1].shape == (rows, 17)
            for a, b in zip(python, compiled, strict=True):
                assert torch.equal(a, b), (kind, fmt, rows)
    assert counted.calls == 2 * 2 * len(formats)  # each sequence was one compiled call
