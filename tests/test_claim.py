"""Faults on the disk and in the caches (issue: nothing lost, nothing stuck): each test makes the
fault happen (a write that fails, a file cut short, a lock held, a process killed) and checks what
the user sees and that nothing good was lost."""

import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import gentext
from gentext import checkpoint, claim
from gentext.cli import main
from gentext.paths import cache_dir
from tests.conftest import TINY_SETTINGS

FLAGS = ["--steps", "3", "--hidden-size", "32", "--embed-size", "16", "--num-layers", "1", "--batch-size", "4",
         "--seq-len", "16", "--mix-markov", "0", "--quiet"]  # fmt: skip


def _full_disk(monkeypatch, after: int = 0):
    """Writes of weights and training state fail as safetensors fails on a full disk, after `after` succeed."""
    import safetensors.torch
    from safetensors import SafetensorError

    calls = {"n": 0}
    real_model, real_file = safetensors.torch.save_model, safetensors.torch.save_file

    def failing(real):
        def save(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after:
                raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
            return real(*args, **kwargs)

        return save

    monkeypatch.setattr(safetensors.torch, "save_model", failing(real_model))
    monkeypatch.setattr(safetensors.torch, "save_file", failing(real_file))


def test_a_full_disk_while_a_new_run_saves_is_one_line_exit_2_and_no_folder(tiny_corpus, tmp_path, monkeypatch, capsys):
    _full_disk(monkeypatch)
    out = tmp_path / "new"
    assert main(["train", str(tiny_corpus), "--out", str(out), *FLAGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"error: could not write {out / 'model.safetensors'} (No space left on device)"
    assert not out.exists()  # no empty or half-written run folder left


def test_a_full_disk_while_a_run_saves_again_keeps_its_last_good_checkpoint(tiny_corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert main(["train", str(tiny_corpus), "--out", str(out), *FLAGS, "--save-every", "1"]) == 0
    before = {name: (out / name).read_bytes() for name in ("model.safetensors", "train_state.safetensors")}
    _full_disk(monkeypatch)
    assert main(["train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 2
    assert "No space left on device); the previous version is intact" in capsys.readouterr().err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert gentext.load(out).generate("The ", max_new_tokens=5)  # still loads
    assert not [p for p in out.iterdir() if p.suffix == ".tmp"]  # no temporary file left behind


def test_a_folder_that_refuses_writes_is_one_line_naming_it(tiny_corpus, tmp_path, monkeypatch, capsys):
    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", refused)
    out = tmp_path / "ro"
    assert main(["train", str(tiny_corpus), "--out", str(out), *FLAGS]) == 2
    assert capsys.readouterr().err.strip().endswith(f"could not write {out / 'tokenizer.json'} (Permission denied)")
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["cut short", "overwritten", "meta lost"])
def test_a_damaged_token_cache_entry_is_found_rebuilt_and_said(tiny_corpus, tmp_path, damage, caplog):
    gentext.train(tmp_path / "a", paths=[str(tiny_corpus)], steps=2, **TINY_SETTINGS)
    entry = cache_dir() / "tokens" / checkpoint.read_config(tmp_path / "a").data.cache_key
    data = (entry / "train.bin").read_bytes()
    if damage == "cut short":
        (entry / "train.bin").write_bytes(data[: len(data) // 3])
    elif damage == "overwritten":
        (entry / "train.bin").write_bytes(bytes(reversed(data)))
    else:
        (entry / "meta.json").write_text("{")
    with caplog.at_level("WARNING"):
        gentext.train(tmp_path / "b", paths=[str(tiny_corpus)], steps=2, **TINY_SETTINGS)  # before: mmap ValueError
    assert "was damaged" in caplog.text and "encoding the text again" in caplog.text
    assert (entry / "train.bin").read_bytes() == data  # rebuilt whole


def test_eval_of_a_run_whose_cache_entry_is_damaged_reads_the_text_again(trained_run, caplog):
    model = gentext.load(trained_run)
    before = model.evaluate()["loss"]
    key = checkpoint.read_config(trained_run).data.cache_key
    train_bin = cache_dir() / "tokens" / key / "val.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:3])
    with caplog.at_level("WARNING"):
        assert gentext.load(trained_run).evaluate()["loss"] == pytest.approx(before)
    assert "was damaged" in caplog.text


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_holds_the_run(tiny_corpus, tmp_path, capsys):
    out = tmp_path / "busy"
    assert main(["train", str(tiny_corpus), "--out", str(out), *FLAGS]) == 0
    with open(out / claim.LOCK, "a+") as held:  # a training in progress holds this
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write("gentext pid 4242")
        held.flush()
        assert main(["train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 2
        assert "is being written by gentext pid 4242: wait for it to finish" in capsys.readouterr().err
        assert main(["train", str(tiny_corpus), "--out", str(out), *FLAGS, "--force"]) == 2
    assert main(["train", str(tiny_corpus), "--out", str(out), "--resume", "--steps", "6", "--quiet"]) == 0


def test_a_reader_waits_for_a_save_under_way(trained_run):
    loaded = threading.Event()
    with claim.saving(trained_run):
        reader = threading.Thread(target=lambda: (gentext.load(trained_run), loaded.set()))
        reader.start()
        time.sleep(0.5)
        assert not loaded.is_set()  # the files of one save are read together or not at all
    reader.join(30)
    assert loaded.is_set()


@pytest.mark.slow
def test_a_run_killed_after_a_checkpoint_resumes(tiny_corpus, tmp_path):
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gentext", "train", str(tiny_corpus), "--out", str(out), "--hidden-size", "32",
               "--embed-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16", "--mix-markov",
               "0", "--steps", "100000", "--save-every", "2", "--eval-every", "4", "--quiet"]  # fmt: skip
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (out / "train_state.safetensors").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    further = str(_checkpoint_step(out) + 5)
    assert main(["train", str(tiny_corpus), "--out", str(out), "--resume", "--quiet", "--steps", further]) == 0
    assert gentext.load(out).generate("The ", max_new_tokens=5)


def _checkpoint_step(run: Path) -> int:
    import json

    from gentext.training.train_state import read_train_state

    data = read_train_state(run)
    header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
    return int(json.loads(header["__metadata__"]["progress"])["step"])


def test_an_export_that_fails_leaves_the_previous_file(trained_run, tmp_path, monkeypatch):
    pytest.importorskip("onnx")
    import shutil

    import torch

    run = tmp_path / "exported"
    shutil.copytree(trained_run, run)
    assert main(["export", str(run)]) == 0
    before = (run / "model.onnx").read_bytes()

    def torn(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a graph")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.onnx, "export", torn)
    assert main(["export", str(run)]) == 2
    assert (run / "model.onnx").read_bytes() == before
    assert not [p for p in run.iterdir() if p.name.startswith(".model.onnx")]


def test_broken_compiled_kernels_are_dropped_to_be_built_again(tmp_path, monkeypatch):
    from gentext import native

    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path))
    monkeypatch.setenv("GENTEXT_NATIVE", "auto")
    entry = native.entry()
    entry.mkdir(parents=True)
    (entry / "gentext_kernels_x.so").write_bytes(b"not a library")
    native.prepare(build_now=False)
    assert native.kernels() is None and not entry.exists() and "removed" in native.status()


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_a_real_full_disk_on_a_small_tmpfs(tiny_corpus, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(small)], capture_output=True).returncode:
        pytest.skip("this machine does not let us mount a tmpfs")
    try:
        command = [sys.executable, "-m", "gentext", "train", str(tiny_corpus), "--out", str(small / "r")]
        done = subprocess.run([*command, *FLAGS, "--hidden-size", "256"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 2 and "No space left on device" in done.stderr.splitlines()[-1]
        assert "Traceback" not in done.stderr and not (small / "r").exists()
    finally:
        subprocess.run(["umount", str(small)], capture_output=True)
