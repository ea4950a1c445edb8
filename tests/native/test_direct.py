"""The compiled kernels' own int8 product of a lone row (native/direct.h): fbgemm's numbers bit for
bit, on inputs that round to a tie and on inputs outside the anchor's range, on one core or two,
with AVX-512 VNNI's kernels and AVX2's (.ci/run repeats these under an AVX2 cap, where fbgemm runs its
AVX2 kernels)."""

import pytest
import torch

from gentext import hardware, native
from gentext.models.weights import Int8Matmul

pytestmark = pytest.mark.isa


@pytest.fixture(params=["avx512", "avx2"])
def isa(request, monkeypatch):
    """Which of the kernels' products the weights are laid out for (the CPU's own choice aside)."""
    chosen = hardware.direct_int8(scaled=True)  # the ISA this CPU gives the kernels, whatever its L2
    if chosen is None or (request.param == "avx512" and chosen != "avx512"):
        pytest.skip(f"this CPU makes its int8 products with {chosen or 'fbgemm'}")
    monkeypatch.setattr("gentext.models.weights.direct_int8", lambda scaled=False: request.param)
    return request.param


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
def test_a_lone_rows_product_is_fbgemms_bit_for_bit(kernels, isa, shape, split, monkeypatch):
    monkeypatch.setattr("gentext.threads.may_split", lambda: split)  # wide products then get halves
    matmul = _matmul(*shape)
    spec = matmul.native()
    assert spec[6] is not None and spec[6][6] == (isa == "avx512")  # the weights were laid out for it
    torch.manual_seed(1)
    before = kernels.split_products()
    for x in [torch.rand(1, shape[1]) * 2 - 1, _ties(shape[1]), _ties(shape[1])]:
        assert torch.equal(kernels.product(spec, x, split), matmul(x))
    assert (kernels.split_products() > before) == (spec[5] is not None)  # on two cores where fbgemm's would be
    assert (spec[5] is not None) == (split and shape[0] >= 1024)


@pytest.mark.parametrize("shape", [(768, 256), (2048, 512)])
@pytest.mark.parametrize("rows", [1, 2])  # 2 x 768 x 256 weight bytes are the kernels' too, 2 x 2048 x 512 fbgemm's
def test_unbounded_rows_scaled_by_their_largest_value_give_fbgemms_numbers(kernels, isa, shape, rows):
    """A minGRU's products: each row divided by its largest magnitude, multiplied back after."""
    matmul = _matmul(*shape, bounded=False)
    spec = matmul.native()
    assert spec[0] == 5 and spec[6] is not None
    torch.manual_seed(2)
    for x in [torch.randn(rows, shape[1]) * 3, _ties(shape[1], rows) * 7]:
        assert torch.equal(kernels.product(spec, x, False), matmul(x))


def test_inputs_beyond_the_anchors_range_go_to_fbgemm(kernels, isa):
    """A value beyond [-1, 1] (or NaN) would move fbgemm's range: the product is then fbgemm's own."""
    matmul = _matmul(2048, 512)
    spec = matmul.native()
    for bad, at in ((1.5, 7), (float("nan"), 7), (-1.01, 511)):  # a vector's lane and the row's tail
        x = torch.rand(1, 512) * 2 - 1
        x[0, at] = bad
        torch.testing.assert_close(kernels.product(spec, x, False), matmul(x), rtol=0, atol=0, equal_nan=True)


def test_rows_that_are_not_whole_blocks_get_no_layout(isa):
    assert _matmul(100, 512).native()[6] is None  # outputs not a multiple of 64
    assert _matmul(2048, 30).native()[6] is None  # inputs not a multiple of 4


def _cpu(monkeypatch, flags: set, capability: str = "AVX512", l2: int = 2 << 20, env: dict | None = None):
    monkeypatch.setattr(hardware, "_cpu_flags", lambda: flags)
    monkeypatch.setattr(hardware, "l2_bytes", lambda: l2)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    for name in hardware.CAPS:
        monkeypatch.delenv(name, raising=False)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)


VNNI = {"avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}


@pytest.mark.parametrize(
    ("flags", "capability", "l2", "env", "chosen"),
    [
        (VNNI, "AVX512", 2 << 20, {}, "avx512"),
        (VNNI, "AVX2", 2 << 20, {"ATEN_CPU_CAPABILITY": "avx2"}, "avx2"),  # the CI's cap
        (VNNI, "AVX512", 2 << 20, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, "avx2"),
        (VNNI, "AVX512", 2 << 20, {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2"),
        ({"avx2", "fma"}, "AVX2", 2 << 20, {}, "avx2"),  # a client CPU without AVX-512
        ({"avx2", "fma"}, "AVX2", 1 << 20, {}, None),  # weights beyond a core's L2: fbgemm's
        (VNNI, "DEFAULT", 2 << 20, {"ATEN_CPU_CAPABILITY": "default"}, None),
        ({"sse4_2"}, "DEFAULT", 2 << 20, {}, None),
    ],
)
def test_the_kernels_product_follows_the_cpu_its_l2_and_the_caps(monkeypatch, flags, capability, l2, env, chosen):
    _cpu(monkeypatch, flags, capability, l2, env)
    assert hardware.direct_int8() == chosen


@pytest.mark.parametrize(
    ("flags", "capability", "env", "chosen"),
    [
        (VNNI, "AVX512", {}, "avx512"),
        (VNNI, "AVX512", {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}, "avx2"),
        ({"avx2", "fma"}, "AVX2", {}, "avx2"),
        ({"sse4_2"}, "DEFAULT", {}, None),
    ],
)
def test_a_scaled_product_is_the_kernels_on_a_small_l2_too(monkeypatch, flags, capability, env, chosen):
    _cpu(monkeypatch, flags, capability, 1 << 20, env)
    assert hardware.direct_int8() is None  # a recurrent state's product there: fbgemm's
    assert hardware.direct_int8(scaled=True) == chosen


def test_on_a_small_l2_only_the_scaled_products_are_laid_out_for_the_kernels(monkeypatch):
    _cpu(monkeypatch, VNNI, "AVX512", 1 << 20)
    assert _matmul(768, 256, bounded=False).native()[6] is not None  # a minGRU's gates
    assert _matmul(2048, 512).native()[6] is None  # an LSTM's recurrent product


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_a_python_steps_int8_product_through_the_kernels_gives_its_numbers(kernels, bounded, rows):
    """A step that runs in Python (a Transformer's) calls the kernels' Product where they are loaded."""
    matmul = _matmul(768, 256, bounded)
    torch.manual_seed(3)
    x = torch.rand(rows, 256) * 2 - 1 if bounded else torch.randn(rows, 256) * 3
    python = matmul(x)  # the suite runs without the kernels
    native.use(kernels)
    try:
        compiled = matmul(x)
        assert matmul._product[1] is not None  # the kernels' product ran
    finally:
        native.use(None)
    assert torch.equal(python, compiled)
