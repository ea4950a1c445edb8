"""Training that survives: exact resume, signals, kill -9, failed writes, non-finite losses, patience."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import safetensors.torch
import torch

import gentext
from gentext import checkpoint
from gentext.errors import GentextError
from gentext.training.train_state import TRAIN_STATE
from gentext.training.trainer import TrainingInterrupted
from tests.conftest import TINY_FLAGS, TINY_SETTINGS, ctrl_c_at, latest_weights

# Dropout makes the run consume random numbers, so an exact resume must restore the RNG too.
RESUME_SETTINGS = {**TINY_SETTINGS, "num_layers": 2, "dropout": 0.2, "save_every": 5, "steps": 24}


@pytest.mark.slow
@pytest.mark.isa  # the default precision is bf16 where the CPU has it, float32 elsewhere
@pytest.mark.parametrize("kind, average", [("lstm", 0.0), ("transformer", 0.0), ("lstm", 0.9)])
def test_interrupted_then_resumed_run_is_bitwise_identical(tiny_corpus, tmp_path, kind, average):
    settings = {**RESUME_SETTINGS, "kind": kind, "weight_average": average}  # the weights' average resumes too
    straight = tmp_path / "straight"
    gentext.train(straight, paths=[str(tiny_corpus)], **settings)

    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted, match="--resume") as info:
        gentext.train(stopped, paths=[str(tiny_corpus)], on_eval=ctrl_c_at(10), **settings)
    assert info.value.exit_code == 130
    assert gentext.load(stopped).generate("The", max_new_tokens=5, seed=0)  # loads while stopped

    summary = gentext.train(stopped, paths=[str(tiny_corpus)], resume=True)
    assert summary["steps"] == 24
    a, b = latest_weights(straight), latest_weights(stopped)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight / "model.safetensors").read_bytes() == (stopped / "model.safetensors").read_bytes()
    steps = [r["step"] for r in checkpoint.read_metrics(stopped) if "train_loss" in r]
    assert steps == sorted(steps) and len(steps) == len(set(steps))  # no duplicated records after resume


@pytest.mark.slow
def test_resume_refuses_changed_settings_and_changed_data(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    gentext.train(run, paths=[str(tiny_corpus)], **{**RESUME_SETTINGS, "steps": 6})
    with pytest.raises(GentextError, match="cannot change --hidden-size"):
        gentext.train(run, resume=True, hidden_size=64)
    other = tmp_path / "other.txt"
    other.write_text(tiny_corpus.read_text()[::-1])
    with pytest.raises(GentextError, match="differs"):
        gentext.train(run, paths=[str(other)], resume=True, steps=12)
    assert gentext.train(run, resume=True, steps=12)["steps"] == 12  # a finished run can be extended


@pytest.mark.slow
def test_resume_from_the_cli_names_the_flag_and_never_goes_backwards(tiny_corpus, tmp_path, capsys):
    from gentext.cli import main

    run = tmp_path / "run"
    gentext.train(run, paths=[str(tiny_corpus)], **{**RESUME_SETTINGS, "steps": 6})
    recorded = (run / "config.json").read_text()
    assert main(["train", "--out", str(run), "--resume", "--steps", "30", "--lr", "1"]) == 2
    assert "cannot change --lr" in capsys.readouterr().err
    assert main(["train", "--out", str(run), "--resume", "--steps", "3"]) == 2  # would train nothing
    assert "already at step 6" in capsys.readouterr().err
    assert (run / "config.json").read_text() == recorded  # the recorded result is untouched


def test_resume_without_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(GentextError, match="no such run directory"):
        gentext.train(tmp_path / "nothing", resume=True)


def _cli(*args):
    return [sys.executable, "-m", "gentext", "train", *map(str, args)]


def _wait_for_step(run, step, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        records = checkpoint.read_metrics(run) if (run / "metrics.jsonl").exists() else []
        if any(r.get("step", 0) >= step for r in records) and (run / TRAIN_STATE).exists():
            return
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


SLOW_FLAGS = [
    "--hidden-size",
    "64",
    "--embed-size",
    "16",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--quiet",
    "--save-every",
    "10",
    "--eval-every",
    "50",
]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGTERM, 143)])
def test_killed_run_loads_and_resumes(tiny_corpus, tmp_path, sig, code):
    run = tmp_path / "run"
    proc = subprocess.Popen(
        _cli(tiny_corpus, "--out", run, "--steps", "3000", *SLOW_FLAGS),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_step(run, 30, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    if sig == signal.SIGTERM:
        assert "SIGTERM" in err and f"gentext train --out {run} --resume" in err and "Traceback" not in err
    assert gentext.load(run).generate("The", max_new_tokens=5, seed=0)
    stopped_at = json.loads(safetensors.safe_open(str(run / TRAIN_STATE), "pt").metadata()["progress"])["step"]
    assert stopped_at >= 10
    done = subprocess.run(
        _cli("--out", run, "--resume", "--steps", stopped_at + 20, "--json", "--quiet"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["steps"] == stopped_at + 20


def test_failed_write_keeps_the_previous_checkpoint(tiny_corpus, tmp_path, monkeypatch):
    run = tmp_path / "run"
    gentext.train(run, paths=[str(tiny_corpus)], **{**TINY_SETTINGS, "steps": 5})
    before = (run / "model.safetensors").read_bytes()

    def disk_full(model, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_model", disk_full)
    with pytest.raises(GentextError, match="could not write .*model.safetensors.*No space left.*intact"):
        gentext.train(run, paths=[str(tiny_corpus)], force=True, **{**TINY_SETTINGS, "steps": 5})
    assert (run / "model.safetensors").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_non_finite_losses_skip_then_stop(tiny_corpus, tmp_path, monkeypatch):
    import torch.nn.functional as functional

    real = functional.cross_entropy  # the model's training loss goes through it
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(functional, "cross_entropy", flaky)
    summary = gentext.train(tmp_path / "one", paths=[str(tiny_corpus)], **{**TINY_SETTINGS, "steps": 8})
    assert summary["steps"] == 8 and summary["val_loss"] is not None

    monkeypatch.setattr(functional, "cross_entropy", lambda *a, **k: real(*a, **k) * float("nan"))
    with pytest.raises(GentextError, match="not finite for 5 steps"):
        gentext.train(tmp_path / "all", paths=[str(tiny_corpus)], **{**TINY_SETTINGS, "steps": 20})
    assert gentext.load(tmp_path / "all")  # the last good checkpoint is intact


def test_patience_stops_when_validation_stops_improving(tiny_corpus, tmp_path, monkeypatch):
    import gentext.training.feeds as feeds

    worse = iter(range(100))
    monkeypatch.setattr(feeds, "evaluate_sample", lambda *a, **k: (1.0 + next(worse), 1))
    seen = []
    summary = gentext.train(
        tmp_path / "r",
        paths=[str(tiny_corpus)],
        patience=2,
        on_eval=lambda step, val, model: seen.append(step),
        **{**TINY_SETTINGS, "steps": 100},
    )
    assert summary["stopped_early"] and summary["steps"] == 15  # evals at 5 (best), 10, 15 -> stop
    assert seen == [5, 10, 15]  # one sample per evaluation, none twice when patience ends the run


def test_loss_plot_and_tensorboard(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "r"
    gentext.train(run, paths=[str(tiny_corpus)], tensorboard=True, **{**TINY_SETTINGS, "steps": 10})
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))


@pytest.mark.slow
def test_torchrun_two_gloo_processes_match_one_process(tiny_corpus, tmp_path):
    flags = ["--steps", "20", *TINY_FLAGS, "--json"]
    single = subprocess.run(_cli(tiny_corpus, "--out", tmp_path / "one", *flags), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--standalone",
        "-m",
        "gentext",
        "train",
        str(tiny_corpus),
        "--out",
        str(tmp_path / "two"),
        *flags,
    ]
    double = subprocess.run(launch, capture_output=True, text=True, env=env, timeout=300)
    assert double.returncode == 0, double.stderr[-2000:]
    assert len([line for line in double.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 reports
    curve = {r["step"]: r["train_loss"] for r in checkpoint.read_metrics(tmp_path / "one") if "train_loss" in r}
    curve2 = {r["step"]: r["train_loss"] for r in checkpoint.read_metrics(tmp_path / "two") if "train_loss" in r}
    assert curve.keys() == curve2.keys() and len(curve) >= 3
    assert all(abs(curve[s] - curve2[s]) < 1e-4 for s in curve)
    assert gentext.load(tmp_path / "two").generate("The", max_new_tokens=5, seed=0)
