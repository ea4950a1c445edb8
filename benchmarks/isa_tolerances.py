"""The quantities the CPU-feature-sensitive (`isa`) tests bound, measured on this CPU, beside the bounds.

    python benchmarks/isa_tolerances.py                          # as this CPU runs them
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 FBGEMM_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/isa_tolerances.py                      # as an AVX2-only CPU runs them

Same data and seeds as tests/models/test_weights.py and tests/inference/test_export.py, so a bound's margin on
each CPU variant is on record (benchmarks/RESULTS.md) rather than guessed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import TINY_SETTINGS, TINY_TEXT  # noqa: E402

import gentext  # noqa: E402
from gentext.config import ModelConfig  # noqa: E402
from gentext.hardware import CAPS, cpu_native  # noqa: E402
from gentext.models import build_model  # noqa: E402
from gentext.models.weights import MATMULS  # noqa: E402


def matmul_errors() -> list[tuple[str, float, float]]:
    rows = []
    for fmt in ("bf16", "int8"):
        torch.manual_seed(0)
        weight, bias, x = torch.randn(1024, 80) * 0.1, torch.randn(1024), torch.randn(5, 80)
        exact = torch.addmm(bias, x, weight.t())
        error = (MATMULS[fmt](weight, bias)(x) - exact).abs().max().item() / exact.abs().max().item()
        rows.append((f"{fmt} matmul, max error / max value", error, 0.05))
    return rows


def step_errors() -> list[tuple[str, float, float]]:
    rows = []
    for fmt in ("bf16", "int8"):
        for kind in ("lstm", "gru", "rnn"):
            torch.manual_seed(0)
            config = ModelConfig(kind=kind, vocab_size=30, embed_size=16, hidden_size=256, num_layers=2)
            net = build_model(config).eval()
            ids = torch.randint(0, 30, (3, 20))
            with torch.inference_mode():
                exact, _ = net(ids, None, targets=ids.roll(-1, 1))
                net.set_weight_format(fmt, evaluate=True)
                stepped, _ = net(ids, None, targets=ids.roll(-1, 1))
            rows.append((f"{kind} step in {fmt}, max log-prob change", (stepped - exact).abs().max().item(), 0.05))
    return rows


def export_errors(tmp: Path) -> list[tuple[str, float, float]]:
    import onnxruntime as ort

    from gentext.inference.export import export_onnx

    corpus = tmp / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    gentext.train(tmp / "run", paths=[str(corpus)], steps=10, **TINY_SETTINGS)
    model = gentext.load(tmp / "run", weights="fp32")
    exported = export_onnx(model, tmp / "int8.onnx", "int8")
    cfg = model.model.config
    h = np.zeros((cfg.num_layers, 2, cfg.hidden_size), dtype=np.float32)
    ids = np.array([1, 4], dtype=np.int64)
    logits, _, _ = ort.InferenceSession(str(exported.path)).run(None, {"ids": ids, "h": h, "c": h})
    with torch.no_grad():
        ref, _ = model.model(torch.from_numpy(ids)[:, None], None)
    error = np.abs(logits - ref[:, 0].numpy()).max() / np.abs(ref.numpy()).max()
    delta = abs(exported.check["int8"] - exported.check["fp32"])
    return [
        ("ONNX int8 step, max logit error / max logit", float(error), 0.1),
        ("ONNX int8, held-out loss change (nats/token)", delta, 0.01 * np.log(2)),
    ]


def main() -> None:
    caps = " ".join(f"{name}={os.environ[name]}" for name in CAPS if os.environ.get(name)) or "none"
    print(f"caps: {caps}; native bf16: {cpu_native(torch.bfloat16)}")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.setdefault("GENTEXT_CACHE", tmp)
        rows = matmul_errors() + step_errors() + export_errors(Path(tmp))
    print("| quantity | measured | test's bound | margin |")
    print("|---|---:|---:|---:|")
    for name, value, bound in rows:
        print(f"| {name} | {value:.4g} | {bound:.4g} | {bound / max(value, 1e-12):.1f}x |")


if __name__ == "__main__":
    main()
