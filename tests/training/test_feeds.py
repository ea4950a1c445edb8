"""Seq2seq and captioning on the one training loop (issue 25): Ctrl-C then --resume equals the
uninterrupted run bit for bit, torchrun's two processes equal one, and every training feature the
language models have (patience, epochs, the non-finite guard, TensorBoard) reaches them."""

import os
import subprocess
import sys

import pytest
import torch

import gentext
from gentext import checkpoint
from gentext.cli import main
from gentext.training.trainer import TrainingInterrupted
from tests.conftest import ctrl_c_at, latest_weights, reversals

PIL = pytest.importorskip("PIL")

SMALL = dict(hidden_size=32, embed_size=16, batch_size=8, eval_every=5, save_every=5, dropout=0.2, precision="fp32")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from gentext.data.shapes import make_shapes

    root = tmp_path_factory.mktemp("conditional")
    make_shapes(root / "shapes", 30, seed=4)
    return {"source": str(reversals(root / "pairs.tsv")), "image": str(root / "shapes")}


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["source", "image"])
def test_an_interrupted_conditional_run_resumes_bit_for_bit(data, tmp_path, condition):
    settings = {**SMALL, "condition": condition, "steps": 20}
    straight = tmp_path / "straight"
    gentext.train(straight, paths=[data[condition]], **settings)
    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        gentext.train(stopped, paths=[data[condition]], on_eval=ctrl_c_at(10), **settings)
    assert info.value.exit_code == 130
    summary = gentext.train(stopped, paths=[data[condition]], resume=True)
    assert summary["steps"] == 20 and 10 <= summary["resumed_at"] < 20
    a, b = latest_weights(straight), latest_weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "model.safetensors").read_bytes() == (stopped / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_conditional_runs_get_patience_epochs_tensorboard_and_the_guard(data, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    import torch.nn.functional as functional

    import gentext.training.feeds as feeds

    run = tmp_path / "run"
    summary = gentext.train(run, paths=[data["source"]], condition="source", **SMALL, epochs=1, tensorboard=True)
    assert summary["steps"] == -(-270 // SMALL["batch_size"]), summary  # one pass over the 270 training pairs
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    real, calls = functional.cross_entropy, {"n": 0}

    def flaky(*args, **kwargs):  # the third training step's loss is NaN
        calls["n"] += 1
        return real(*args, **kwargs) * (float("nan") if calls["n"] == 3 else 1.0)

    monkeypatch.setattr(functional, "cross_entropy", flaky)
    skipped = gentext.train(tmp_path / "nan", paths=[data["image"]], condition="image", **{**SMALL, "steps": 8})
    assert skipped["steps"] == 8 and skipped["val_loss"] is not None
    monkeypatch.setattr(functional, "cross_entropy", real)

    worse = iter(range(100))
    monkeypatch.setattr(feeds, "pair_loss", lambda *a, **k: (1.0 + next(worse), 1))
    stop = gentext.train(tmp_path / "p", paths=[data["source"]], condition="source", patience=2, **SMALL, steps=400)
    assert stop["stopped_early"] and stop["steps"] == 15  # evaluations at 5 (best), 10, 15 -> stop


@pytest.mark.slow
@pytest.mark.parametrize("condition", ["source", "image"])
def test_torchrun_trains_a_conditional_run_as_one_process_does(data, tmp_path, condition):
    flags = ["--condition", condition, "--steps", "10", "--hidden-size", "32", "--embed-size", "16"]
    flags += ["--batch-size", "8", "--eval-every", "5", "--dropout", "0", "--precision", "fp32", "--quiet", "--json"]
    assert main(["train", data[condition], "--out", str(tmp_path / "one"), *flags]) == 0  # one process: in this one
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "gentext"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    double = subprocess.run(
        [*launch, "train", data[condition], "--out", str(tmp_path / "two"), *flags],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    curves = [
        {r["step"]: r["train_loss"] for r in checkpoint.read_metrics(tmp_path / name) if "train_loss" in r}
        for name in ("one", "two")
    ]
    assert curves[0].keys() == curves[1].keys() and len(curves[0]) >= 2
    assert all(abs(curves[0][s] - curves[1][s]) < 1e-4 for s in curves[0])
