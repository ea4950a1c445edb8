"""minGRU (models/mingru.py): the recurrence, its hand-written backward, the step path, and a run
of the kind through training, mixing, generation and export like any other."""

import importlib.util
import json

import numpy as np
import pytest
import torch

import gentext
from gentext.cli import main
from gentext.config import ModelConfig
from gentext.models import build_model
from gentext.models.mingru import LinearScan, g
from tests.conftest import TINY_SETTINGS, TINY_TEXT


def _loop(a, b, h0):
    """The recurrence as plain autograd operations: the reference for LinearScan."""
    h, out = h0, []
    for t in range(b.shape[1]):
        h = a[:, t] * h + b[:, t]
        out.append(h)
    return torch.stack(out, 1)


def test_the_scan_and_its_backward_equal_the_plain_recurrence():
    gen = torch.Generator().manual_seed(0)
    a, b, h0 = (torch.rand(shape, generator=gen, dtype=torch.float64) for shape in ((2, 7, 3), (2, 7, 3), (2, 3)))
    inputs = [x.requires_grad_() for x in (a, b, h0)]
    assert torch.autograd.gradcheck(LinearScan.apply, inputs)
    out = LinearScan.apply(*inputs)
    assert torch.allclose(out, _loop(*inputs))
    weights = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    mine = torch.autograd.grad((out * weights).sum(), inputs)
    plain = torch.autograd.grad((_loop(*inputs) * weights).sum(), inputs)
    assert all(torch.allclose(x, y) for x, y in zip(mine, plain, strict=True))


def test_a_layer_follows_the_minimal_gru_formula():
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="mingru", vocab_size=9, hidden_size=6, num_layers=1)).eval()
    layer, x = net.layers[0], torch.randn(1, 4, 6)
    with torch.no_grad():
        out, last = layer(x, torch.zeros(1, 6))
        k, cand = layer.gates(layer.norm(x)).chunk(2, -1)
        z, h, hs = torch.sigmoid(k), torch.zeros(1, 6), []
        for t in range(4):  # the gates read the input alone, never h
            h = (1 - z[:, t]) * h + z[:, t] * g(cand[:, t])
            hs.append(h)
        assert torch.allclose(last, hs[-1], atol=1e-6)
        mid = x + torch.stack(hs, 1)
        assert torch.allclose(out, mid + layer.mlp(layer.mlp_norm(mid)), atol=1e-5)
    assert torch.all(g(torch.linspace(-20, 20, 101)) > 0)  # the candidate stays positive


def test_the_step_path_equals_the_parallel_pass():
    torch.manual_seed(1)
    net = build_model(ModelConfig(kind="mingru", vocab_size=13, hidden_size=16, num_layers=3)).eval()
    ids = torch.randint(0, 13, (2, 10))
    with torch.inference_mode():
        parallel, state = net(ids, None)
        net.set_weight_format("fp32", evaluate=True)  # fp32 weights never step: force it for the check
        net.stepped_sequences = True
        stepped, stepped_state = net(ids, None)
    assert torch.allclose(parallel, stepped, atol=1e-5)
    assert torch.allclose(state.tensors["h"], stepped_state.tensors["h"], atol=1e-5)


def test_the_step_follows_weights_changed_in_place_or_replaced():
    """The step's int8 copies of the weights are made again when a weight they copy changes: in
    place (training on after a sample) or replaced (load_state_dict(assign=True)); the result is
    a fresh model's with those weights."""

    def made(state_dict=None):
        torch.manual_seed(2)
        net = build_model(ModelConfig(kind="mingru", vocab_size=13, hidden_size=16, num_layers=2)).eval()
        if state_dict is not None:
            net.load_state_dict(state_dict)
        net.set_weight_format("int8", evaluate=True)
        return net

    net, ids = made(), torch.randint(0, 13, (2, 3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net(ids, None)  # the step's copies are made
        net.layers[1].mlp[2].weight.mul_(3.0)
        net.head.weight.add_(0.5)
    changed = {k: v.clone() for k, v in net.state_dict().items()}
    changed["layers.0.gates.weight"] = changed["layers.0.gates.weight"] * -1
    net.load_state_dict(changed, assign=True)
    fresh = made(changed)
    with torch.inference_mode():
        assert torch.equal(net(ids, None)[0], fresh(ids, None)[0])


def test_an_int8_steps_first_gates_come_from_a_table_with_the_numbers_it_computed(monkeypatch):
    """An int8 step reads its first layer's gates per id from a table built one id at a time: a
    lone row and a batch get the numbers the step computed without one."""

    def steps(table: bool):
        monkeypatch.setattr("gentext.models.mingru.FIRST_TABLE_IDS", 4096 if table else 0)
        torch.manual_seed(3)
        net = build_model(ModelConfig(kind="mingru", vocab_size=40, hidden_size=256, num_layers=2)).eval()
        net.set_weight_format("int8")
        out, ids = [], torch.tensor([[1], [7], [7], [39], [0]])
        with torch.inference_mode():
            for rows in (ids[:1], ids):
                state = None
                for _ in range(6):
                    logits, state = net(rows, state)
                    out += [logits, state.tensors["h"]]
                    rows = logits[:, -1].argmax(-1, keepdim=True)
        return out, net._step_ops()["first"]

    (tabled, table), (computed, none) = steps(True), steps(False)
    assert table is not None and table[0].shape == (40, 256) and none is None
    assert all(torch.equal(a, b) for a, b in zip(tabled, computed, strict=True))


@pytest.fixture(scope="module")
def mingru_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mingru")
    (root / "t.txt").write_text(TINY_TEXT, encoding="utf-8")
    settings = {**TINY_SETTINGS, "mix_order": None}  # the default: mixed with a chain
    summary = gentext.train(root / "run", paths=[str(root / "t.txt")], steps=30, model="mingru", **settings)
    return root, summary


@pytest.mark.slow
def test_a_mingru_run_learns_is_mixed_and_generates_from_its_state(mingru_run):
    root, summary = mingru_run
    config = json.loads((root / "run" / "config.json").read_text())
    assert config["model"]["kind"] == "mingru" and summary["mixture"]["order"] in (6, 7, 8)
    records = [json.loads(line) for line in (root / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["val_loss"] for r in records if "val_loss" in r]
    assert losses[-1] < losses[0] - 0.2  # training moved the held-out loss
    model = gentext.load(root / "run")
    alone = [model.generate(p, max_new_tokens=25, seed=3, temperature=0.8)[0] for p in ("The ", "A")]
    assert model.generate_many(["The ", "A"], max_new_tokens=25, seed=3, temperature=0.8) == alone
    model.set_weights("int8")
    assert model.generate("The ", max_new_tokens=25, temperature=0)[0].startswith("The ")


def test_a_mingru_run_resumes_where_it_stopped(tmp_path, tiny_corpus):
    settings = {**TINY_SETTINGS, "mix_order": 0}
    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=6, model="mingru", **settings)
    resumed = gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=12, resume=True)
    assert resumed["resumed_at"] == 6 and resumed["steps"] == 12


@pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs the onnx extra")
def test_the_onnx_step_scores_as_the_run_does(mingru_run, tmp_path, capsys):
    from gentext.inference.export import onnx_loss

    root, _ = mingru_run
    assert main(["export", str(root / "run"), "--output", str(tmp_path / "step.onnx")]) == 0
    capsys.readouterr()
    model = gentext.load(root / "run", network_only=True)
    ids = np.asarray(model.tokenizer.encode("The quick brown fox jumps over the lazy dog."))[None]
    with torch.inference_mode():
        logp, _ = model.model(torch.tensor(ids[:, :-1]), None, targets=torch.tensor(ids[:, 1:]))
    assert onnx_loss(tmp_path / "step.onnx", ids.astype(np.int64)) == pytest.approx(-logp.mean().item(), abs=1e-4)
