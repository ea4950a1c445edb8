"""ONNX export of the single-step network, checked in onnxruntime against PyTorch."""

import numpy as np
import pytest
import torch

import gentext
from gentext.cli import main

pytestmark = pytest.mark.isa  # CPU features: int8 kernels (VNNI or not), bf16 (AVX-512 BF16 or not)

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_onnx_step_matches_pytorch_and_reproduces_greedy_text(trained_run, tmp_path, capsys):
    path = tmp_path / "step.onnx"
    assert main(["export", str(trained_run), "--format", "onnx", "--output", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    model = gentext.load(trained_run)
    session = ort.InferenceSession(str(path))
    cfg = model.model.config

    rng = np.random.default_rng(0)
    ids = np.array([1, 4, 7], dtype=np.int64)
    h = rng.standard_normal((cfg.num_layers, 3, cfg.hidden_size), dtype=np.float32)
    c = rng.standard_normal((cfg.num_layers, 3, cfg.hidden_size), dtype=np.float32)
    logits, h_out, c_out = session.run(None, {"ids": ids, "h": h, "c": c})
    with torch.no_grad():
        state = model.model.state_from_tensors({"h": torch.from_numpy(h), "c": torch.from_numpy(c)})
        ref, ref_state = model.model(torch.from_numpy(ids)[:, None], state)
        ref_h, ref_c = ref_state.tensors["h"], ref_state.tensors["c"]
    assert np.allclose(logits, ref[:, 0].numpy(), atol=1e-4)
    assert np.allclose(h_out, ref_h.numpy(), atol=1e-4) and np.allclose(c_out, ref_c.numpy(), atol=1e-4)

    # Greedy decoding in onnxruntime alone: feed the prompt one token at a time, then the argmax.
    prompt = "The q"
    tokens = model.tokenizer.encode(prompt).tolist()
    h = np.zeros((cfg.num_layers, 1, cfg.hidden_size), dtype=np.float32)
    c = np.zeros_like(h)
    for token in tokens:
        logits, h, c = session.run(None, {"ids": np.array([token]), "h": h, "c": c})
    generated = []
    for _ in range(25):
        token = int(logits[0].argmax())
        generated.append(token)
        logits, h, c = session.run(None, {"ids": np.array([token]), "h": h, "c": c})
    onnx_text = prompt + model.tokenizer.decode(generated)
    assert onnx_text == model.generate(prompt, max_new_tokens=25, temperature=0)[0]


def test_markov_runs_cannot_be_exported(tmp_path, tiny_corpus, capsys):
    from gentext.config import ModelConfig

    gentext.train(tmp_path / "m", paths=[str(tiny_corpus)], model=ModelConfig(kind="markov", order=3))
    assert main(["export", str(tmp_path / "m")]) == 2
    assert "no network to export" in capsys.readouterr().err


def test_an_int8_export_quantizes_the_matrices_and_stays_close(trained_run, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    path = tmp_path / "int8.onnx"
    assert main(["export", str(trained_run), "--weights", "int8", "--output", str(path)]) == 0
    graph = onnx.load(str(path)).graph
    assert {node.op_type for node in graph.node} & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}
    # Saturation-free on every CPU: without VNNI (AVX2) onnxruntime adds two uint8 x int8 products in
    # int16, which 255 * 127 * 2 overflows; 7-bit weights keep 255 * 64 * 2 below 32767.
    weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64
    # What users feel: the held-out loss in onnxruntime, printed by the export, within 0.01 bits of fp32.
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("held-out loss in onnxruntime: fp32")
    fp32, int8 = (float(part.split()[-1]) for part in line.split(" nats/token")[0].split(","))
    assert abs(int8 - fp32) < 0.01 * np.log(2)
    # Smoke test: one step's logits close to PyTorch's.
    model = gentext.load(trained_run, weights="fp32")
    cfg = model.model.config
    h = np.zeros((cfg.num_layers, 2, cfg.hidden_size), dtype=np.float32)
    ids = np.array([1, 4], dtype=np.int64)
    logits, _, _ = ort.InferenceSession(str(path)).run(None, {"ids": ids, "h": h, "c": h})
    with torch.no_grad():
        ref, _ = model.model(torch.from_numpy(ids)[:, None], None)
    error = np.abs(logits - ref[:, 0].numpy()).max()
    assert 0 < error < 0.1 * np.abs(ref.numpy()).max()
    assert not list(tmp_path.glob("*.tmp"))  # the float32 intermediate is gone


def test_the_export_loss_check_agrees_with_pytorch(trained_run, tmp_path):
    from gentext.inference.export import export_onnx, onnx_loss

    model = gentext.load(trained_run, weights="fp32")
    path = export_onnx(model, tmp_path / "fp32.onnx").path
    ids = np.asarray(model.held_out_ids()[0][:64], dtype=np.int64).reshape(2, 32)
    with torch.no_grad():
        logits, _ = model.model(torch.from_numpy(ids[:, :-1]), None)
        ref = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), torch.from_numpy(ids[:, 1:]).reshape(-1)
        )
    assert onnx_loss(path, ids) == pytest.approx(ref.item(), abs=1e-4)
