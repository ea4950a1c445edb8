"""ONNX export of the single-step network, checked in onnxruntime against PyTorch."""

import numpy as np
import pytest
import torch

import gentext
from gentext.cli import main

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


def test_an_int8_export_quantizes_the_matrices_and_stays_close(trained_run, tmp_path):
    import onnx

    path = tmp_path / "int8.onnx"
    assert main(["export", str(trained_run), "--weights", "int8", "--output", str(path)]) == 0
    ops = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul"}  # int8 arithmetic inside
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
