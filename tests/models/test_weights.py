"""Weight formats for the generation step (issue 16): fp32, bf16, fp16, int8 and auto."""

import json

import pytest
import torch

import gentext
from gentext.cli import main
from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.inference import formats
from gentext.models import build_model
from gentext.models.weights import MATMULS, Int8Matmul, check_format, fast_formats
from tests.conftest import TINY_SETTINGS, TINY_TEXT

pytestmark = pytest.mark.isa  # CPU features: int8 kernels (VNNI or not), bf16 (AVX-512 BF16 or not)


@pytest.mark.parametrize("fmt", ["bf16", "fp16", "int8"])
def test_each_format_multiplies_like_float32_within_its_rounding(fmt):
    torch.manual_seed(0)
    weight, bias, x = torch.randn(1024, 80) * 0.1, torch.randn(1024), torch.randn(5, 80)
    exact = torch.addmm(bias, x, weight.t())
    got = MATMULS[fmt](weight, bias)(x)
    assert got.dtype == torch.float32 and got.shape == exact.shape
    error = (got - exact).abs().max().item()
    assert 0 < error < 0.05 * exact.abs().max().item()  # rounded, and only rounded


def test_an_int8_row_gets_the_same_result_alone_or_in_any_batch():
    # continuous batching promises a request's text equals the same request alone; a per-batch
    # activation scale would break it (float32 differs only in the last bits, from kernel blocking)
    torch.manual_seed(0)
    op = MATMULS["int8"](torch.randn(1024, 256) * 0.1, torch.randn(1024))
    row = torch.rand(1, 256) * 0.2 - 0.1  # a quiet state...
    loud = torch.rand(7, 256) * 2 - 1  # ...batched with loud ones
    assert torch.equal(op(row), op(torch.cat([loud[:3], row, loud[3:]]))[3:4])


@pytest.mark.parametrize("fmt", ["int8", "fp16"])
def test_packed_products_skip_the_dispatch_checks_but_not_the_kernel(fmt):
    """The products call the quantized operators' builtins with torch-function checks off
    (weights._packed_op): the numbers are the public operator's, bit for bit, and a tensor
    subclass given as input comes back as a plain result."""
    torch.manual_seed(0)
    w, b, x = torch.randn(400, 200), torch.randn(400), torch.rand(5, 200) * 2 - 1  # above SMALL_MATRIX
    m = MATMULS[fmt](w, b)
    if fmt == "int8":
        expected = torch.ops.quantized.linear_dynamic(torch.cat([x, m.anchor]), m.packed, True)[:-1]
    else:
        expected = torch.ops.quantized.linear_dynamic_fp16(x, m.packed)
    assert torch.equal(m(x), expected)
    assert torch.equal(m(torch.nn.Parameter(x, requires_grad=False)), expected)


def test_unbounded_int8_rows_are_scaled_each_by_itself():
    # a Transformer's inputs have no [-1, 1] bound: each row is quantized on its own range, so a
    # quiet row keeps its precision and its result beside loud rows
    torch.manual_seed(0)
    weight, bias = torch.randn(1024, 256) * 0.1, torch.randn(1024)
    op = MATMULS["int8"](weight, bias, bounded=False)
    row, loud = torch.randn(1, 256) * 0.01, torch.randn(7, 256) * 50
    alone = op(row)
    assert torch.equal(alone, op(torch.cat([loud[:3], row, loud[3:]]))[3:4])
    exact = torch.addmm(bias, row, weight.t())
    assert 0 < (alone - exact).abs().max().item() < 0.02 * (exact - bias).abs().max().item()


def test_int8_is_per_channel_a_small_row_keeps_its_precision():
    weight = torch.randn(4, 64)
    weight[0] *= 1e-3  # one tiny row: a per-tensor scale would round it all to zero
    got = Int8Matmul(weight, None)(torch.eye(64))  # = W^T (inputs are states, within [-1, 1])
    assert torch.allclose(got[:, 0], weight[0], rtol=0.1, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "mingru", "transformer"])
@pytest.mark.parametrize("fmt", ["bf16", "fp16", "int8"])
def test_step_in_a_format_stays_close_to_fp32_and_evaluation_can_measure_it(kind, fmt):
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind=kind, vocab_size=30, embed_size=16, hidden_size=256, num_layers=2)).eval()
    ids = torch.randint(0, 30, (3, 20))
    with torch.inference_mode():
        exact, _ = net(ids, None, targets=ids.roll(-1, 1))
        net.set_weight_format(fmt)  # generation only: sequences keep the fp32 kernel
        assert torch.equal(net(ids, None, targets=ids.roll(-1, 1))[0], exact)
        net.set_weight_format(fmt, evaluate=True)
        stepped, _ = net(ids, None, targets=ids.roll(-1, 1))
    assert 0 < (stepped - exact).abs().max().item() < 0.05


def test_step_matrices_follow_the_weights_when_training_changes_them():
    net = build_model(ModelConfig(kind="lstm", vocab_size=10, embed_size=8, hidden_size=8, num_layers=1)).eval()
    ids = torch.tensor([1, 2])
    with torch.inference_mode():
        before, _ = net._step(ids, None)
    with torch.no_grad():
        net.head.bias += 1.0  # in place, as an optimizer step
    with torch.inference_mode():
        after, _ = net._step(ids, None)
    assert torch.allclose(after, before + 1.0, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru", "mingru", "transformer"])
def test_after_a_training_step_the_int8_step_and_the_cache_readout_are_a_fresh_models(kind):
    """The step's int8 copies are checked once per run of tokens, not every token; a training step
    between two runs (a sample printed mid-training, then training on) is a new run, so the next
    token reads the new weights, as a model built from them would."""
    # 256 wide: the products are int8 copies, not SMALL_MATRIX float32 reading the weights live
    cfg = ModelConfig(kind=kind, vocab_size=11, embed_size=64, hidden_size=256, num_layers=2, num_heads=2)

    def made(state_dict=None):
        torch.manual_seed(3)
        net = build_model(cfg)
        if state_dict is not None:
            net.load_state_dict(state_dict)
        net.set_weight_format("int8")
        return net

    def token(net):
        with torch.inference_mode():
            net.eval()
            out = net._step(torch.tensor([4, 7]), None)[0]
            if hasattr(net, "readout"):  # the neural cache's path: features, then the head
                out = torch.cat([out, net.readout(net.features(torch.tensor([[4], [7]]))[0])], dim=-1)
            return out

    net = made()
    before = token(net)
    net.train()
    ids = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
    loss = -net(ids, None, targets=ids.roll(-1, 1))[0].mean()
    loss.backward()
    torch.optim.SGD(net.parameters(), lr=1.0).step()
    after = token(net)
    assert not torch.equal(after, before)
    assert torch.equal(after, token(made(net.state_dict())))


@pytest.fixture(scope="module")
def wide_run(tmp_path_factory):
    """A run whose matrices are big enough to be stored in a format (SMALL_MATRIX)."""
    root = tmp_path_factory.mktemp("wide")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    gentext.train(root / "run", paths=[str(corpus)], steps=10, **{**TINY_SETTINGS, "hidden_size": 256})
    return root / "run"


@pytest.mark.slow
def test_auto_takes_a_format_only_when_its_measured_cost_is_within_bounds(wide_run, monkeypatch):
    model = gentext.load(wide_run, weights="fp32")
    start = model._prompt("").ids
    cost = formats.kl_cost(model.model, "int8", start)
    assert 0 < cost < formats.QUALITY_BOUND  # a tiny network barely notices int8
    assert formats.kl_cost(model.model, "fp32", start) == pytest.approx(0, abs=1e-9)
    monkeypatch.setattr(formats, "fast_formats", lambda device: ["int8", "fp32"])
    assert model.set_weights("auto") == "int8" and model.weight_costs["int8"] == pytest.approx(cost)
    monkeypatch.setattr(formats, "QUALITY_BOUND", cost / 2)
    assert model.set_weights("auto") == "fp32"  # too costly: float32


def test_small_matrices_stay_float32_where_a_quantized_call_costs_more_than_it_saves():
    head = torch.randn(65, 512)  # a character model's output layer
    assert type(MATMULS["int8"](head, None)) is type(MATMULS["fp32"](head, None))
    assert isinstance(MATMULS["int8"](torch.randn(2048, 512), None), Int8Matmul)


@pytest.mark.parametrize("splits", [True, False])
def test_int8_weights_are_packed_in_halves_only_where_a_step_may_split(splits, monkeypatch):
    monkeypatch.setattr("gentext.threads.may_split", lambda: splits)  # False: a server, --threads N, one core
    wide, narrow = MATMULS["int8"](torch.randn(2048, 512), None), MATMULS["int8"](torch.randn(512, 512), None)
    halves = wide.native()[5]  # (kind, weight, bias, packed, anchor, halves, direct)
    assert (halves is not None) == splits and narrow.native()[5] is None
    if splits:
        x = torch.rand(1, 512) * 2 - 1
        joined = torch.cat(
            [torch.ops.quantized.linear_dynamic(torch.cat([x, wide.anchor]), h, True)[:1] for h in halves], 1
        )
        assert torch.equal(joined, wide(x))  # the halves give the whole's numbers


def test_emulated_bf16_is_never_chosen_and_refused_when_asked(monkeypatch):
    monkeypatch.setattr("gentext.models.weights.cpu_native", lambda dtype: False)
    assert "bf16" not in fast_formats(torch.device("cpu"))
    with pytest.raises(GentextError, match="no native bf16"):
        check_format("bf16", torch.device("cpu"))
    monkeypatch.setattr("gentext.models.weights.cpu_native", lambda dtype: True)
    assert "bf16" in fast_formats(torch.device("cpu"))


def test_fp16_weights_keep_float32_precision_and_are_refused_where_fbgemm_cannot_run_them(monkeypatch):
    torch.manual_seed(0)
    weight, bias, rows = torch.randn(1024, 256) * 0.1, torch.randn(1024), torch.randn(8, 256)
    exact, got = torch.addmm(bias, rows, weight.t()), MATMULS["fp16"](weight, bias)(rows)
    assert 0 < (got - exact).abs().max().item() < 1e-3 * exact.abs().max().item()  # float16's 11 bits, no more
    monkeypatch.setattr("gentext.models.weights.fp16_weights_native", lambda: True)
    assert fast_formats(torch.device("cpu"))[-2:] == ["fp16", "fp32"]  # after int8 (and bf16), before fp32
    monkeypatch.setattr("gentext.models.weights.fp16_weights_native", lambda: False)
    assert "fp16" not in fast_formats(torch.device("cpu"))
    with pytest.raises(GentextError, match="fp16 needs an x86 CPU with AVX2"):
        check_format("fp16", torch.device("cpu"))


def test_formats_through_the_cli_and_clear_errors(wide_run, tmp_path, capsys):
    trained_run = wide_run
    assert main(["generate", str(trained_run), "--weights", "int8", "--max-new-tokens", "20", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["samples"][0]) > 0
    assert main(["eval", str(trained_run), "--json"]) == 0
    fp32 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert main(["eval", str(trained_run), "--weights", "int8", "--json"]) == 0
    int8 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"]
    assert int8 != fp32 and abs(int8 - fp32) < 0.05
    assert main(["generate", str(trained_run), "--weights", "fp8"]) == 2
    assert "--weights" in capsys.readouterr().err
    markov = tmp_path / "markov"
    gentext.train(markov, paths=[str(trained_run.parent / "tiny.txt")], model="markov", order=2)
    assert gentext.load(markov).weights == "fp32"  # auto: nothing to quantize
    with pytest.raises(GentextError, match="language networks"):
        gentext.load(markov, weights="int8")
