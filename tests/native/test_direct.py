"""The compiled kernels' own int8 product of a lone row (native/direct.h): fbgemm's numbers bit for
bit, on inputs that round to a tie and on inputs outside the anchor's range, on one core or two."""

import pytest
import torch

from gentext import hardware
from gentext.models.weights import Int8Matmul

pytestmark = pytest.mark.skipif(not hardware.direct_int8(), reason="this CPU makes its int8 products in fbgemm")


def _matmul(outputs: int, width: int, bounded: bool = True) -> Int8Matmul:
    torch.manual_seed(outputs + width)
    return Int8Matmul(torch.randn(outputs, width) * 0.05, torch.randn(outputs) * 0.1, bounded)


def _ties(width: int, rows: int = 1) -> torch.Tensor:
    """Inputs whose scaled value is a tie (k + 0.5 before the zero point), a float either side of
    one, and the bounds: where a rounding rule other than fbgemm's would show."""
    scale = 2 / 127
    ties = torch.tensor([(k + 0.5) * scale for k in range(-64, 64)], dtype=torch.float32)
    bounds = torch.tensor([-1.0, 0.0, 1.0])
    near = torch.cat([ties, ties.nextafter(torch.tensor(2.0)), ties.nextafter(torch.tensor(-2.0)), bounds])
    return near.clamp(-1, 1)[torch.randint(len(near), (rows, width))]


@pytest.mark.parametrize("shape", [(2048, 512), (2048, 1024), (64, 100)])
@pytest.mark.parametrize("split", [False, True])
def test_a_lone_rows_product_is_fbgemms_bit_for_bit(kernels, shape, split, monkeypatch):
    monkeypatch.setattr("gentext.threads.may_split", lambda: split)  # wide products then get halves
    matmul = _matmul(*shape)
    spec = matmul.native()
    assert spec[6] is not None  # the weights were laid out for it
    torch.manual_seed(1)
    before = kernels.split_products()
    for x in [torch.rand(1, shape[1]) * 2 - 1, _ties(shape[1]), _ties(shape[1])]:
        assert torch.equal(kernels.product(spec, x, split), matmul(x))
    assert (kernels.split_products() > before) == (spec[5] is not None)  # on two cores where fbgemm's would be
    assert (spec[5] is not None) == (split and shape[0] >= 1024)


@pytest.mark.parametrize("shape", [(768, 256), (2048, 512)])
def test_unbounded_rows_scaled_by_their_largest_value_give_fbgemms_numbers(kernels, shape):
    """A minGRU's products: each row divided by its largest magnitude, multiplied back after."""
    matmul = _matmul(*shape, bounded=False)
    spec = matmul.native()
    assert spec[0] == 5 and spec[6] is not None
    torch.manual_seed(2)
    for x in [torch.randn(1, shape[1]) * 3, _ties(shape[1]) * 7]:
        assert torch.equal(kernels.product(spec, x, False), matmul(x))


def test_inputs_beyond_the_anchors_range_go_to_fbgemm(kernels):
    """A value beyond [-1, 1] (or NaN) would move fbgemm's range: the product is then fbgemm's own."""
    matmul = _matmul(2048, 512)
    spec = matmul.native()
    for bad in (1.5, float("nan")):
        x = torch.rand(1, 512) * 2 - 1
        x[0, 7] = bad
        torch.testing.assert_close(kernels.product(spec, x, False), matmul(x), rtol=0, atol=0, equal_nan=True)


def test_rows_that_are_not_whole_blocks_get_no_layout():
    assert _matmul(100, 512).native()[6] is None  # outputs not a multiple of 64
    assert _matmul(2048, 30).native()[6] is None  # inputs not a multiple of 4
