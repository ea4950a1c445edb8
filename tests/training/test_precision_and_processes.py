"""The paths that one CPU process with one stream never takes: other precisions, failing
callbacks, non-finite steps, masked vocabularies, non-ASCII streaming, several processes."""

import json
import logging
import os
import subprocess
import sys

import pytest
import safetensors
import safetensors.torch  # noqa: F401
import torch

import gentext
from gentext import checkpoint, hardware
from gentext.cli import main
from gentext.training.train_state import TRAIN_STATE
from tests.conftest import TINY_FLAGS, TINY_SETTINGS

UNICODE_TEXT = ("Zoë's café — 日本語 🙂 is bright. Émile eats crème brûlée; 東京 and 大阪 🙂🎉.\n") * 60
PROMPT = "Zoë's café — 日本語 🙂"


def _train_state(run):
    with safetensors.safe_open(str(run / TRAIN_STATE), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()


@pytest.mark.isa
def test_a_failing_sample_callback_never_ends_training(tiny_corpus, tmp_path, caplog):
    def broken(step, val, textmodel):
        raise RuntimeError("the sampler broke")

    with caplog.at_level(logging.WARNING):
        summary = gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=12, on_eval=broken, **TINY_SETTINGS)
    assert summary["steps"] == 12
    assert "the sampler broke" in caplog.text and "training continues" in caplog.text
    assert gentext.load(tmp_path / "run").generate("The", max_new_tokens=3, seed=0)


def test_the_sample_callback_runs_after_that_steps_checkpoint(tiny_corpus, tmp_path):
    seen = []

    def record(step, val, textmodel):
        weights_step = json.loads(_train_state(tmp_path / "run")[1]["progress"])["step"]
        seen.append((step, weights_step))

    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=10, save_every=5, on_eval=record, **TINY_SETTINGS)
    assert seen and all(step == saved for step, saved in seen)


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU multiplies bf16 and fp16 natively, so the paths run on any CPU (slowly)."""
    monkeypatch.setattr(hardware, "cpu_native", lambda dtype: True)


@pytest.mark.slow
@pytest.mark.isa
def test_fp16_training_scales_the_loss_and_saves_the_scaler(tiny_corpus, tmp_path, native):
    # a plain RNN: oneDNN has no fp16 LSTM kernel for a CPU, which this test pretends to be native
    run = tmp_path / "run"
    gentext.train(run, paths=[str(tiny_corpus)], steps=6, precision="fp16", **{**TINY_SETTINGS, "kind": "rnn"})
    scaler = json.loads(_train_state(run)[1]["scaler"])
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler
    fp32 = tmp_path / "fp32"
    gentext.train(fp32, paths=[str(tiny_corpus)], steps=6, precision="fp32", **TINY_SETTINGS)
    assert json.loads(_train_state(fp32)[1]["scaler"]) == {}  # no scaler where none is needed


@pytest.mark.isa
def test_bf16_keeps_the_carried_state_float32_and_reports_what_eval_reproduces(tiny_corpus, tmp_path, monkeypatch):
    # CPU feature: AVX-512 BF16 or AMX for the LSTM (oneDNN has no bf16 LSTM kernel below them, not even
    # an emulated one). Elsewhere the plain RNN, whose bf16 kernel oneDNN emulates, takes the same path.
    kind, state_names = (
        ("lstm", {"state.h", "state.c"}) if hardware.cpu_native(torch.bfloat16) else ("rnn", {"state.h"})
    )
    monkeypatch.setattr(hardware, "cpu_native", lambda dtype: True)
    run = tmp_path / "run"
    summary = gentext.train(run, paths=[str(tiny_corpus)], steps=8, precision="bf16", **{**TINY_SETTINGS, "kind": kind})
    tensors, _ = _train_state(run)
    state = {k: v for k, v in tensors.items() if k.startswith("state.")}
    assert set(state) == state_names and all(v.dtype == torch.float32 for v in state.values())
    model = gentext.load(run, weights="fp32")
    assert model.evaluate()["loss"] == pytest.approx(summary["val_loss"], abs=1e-6)


@pytest.mark.isa
def test_the_rnn_state_is_float32_under_autocast():
    from gentext.config import ModelConfig
    from gentext.models import build_model

    # CPU feature: the LSTM needs AVX-512 BF16 or AMX under bf16 autocast (see the bf16 test above)
    kind = "lstm" if hardware.cpu_native(torch.bfloat16) else "rnn"
    model = build_model(ModelConfig(kind=kind, vocab_size=9, embed_size=8, hidden_size=8, num_layers=2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, state = model(torch.randint(0, 9, (2, 5)), None)
        _, state = model(torch.randint(0, 9, (2, 5)), state)
    assert all(t.dtype == torch.float32 for t in state.tensors.values())


@pytest.mark.isa
@pytest.mark.parametrize("precision, lacking", [("bf16", "AVX-512 BF16 or AMX"), ("fp16", "AVX-512 FP16")])
def test_a_precision_the_cpu_lacks_is_a_one_line_error(tiny_corpus, tmp_path, capsys, monkeypatch, precision, lacking):
    monkeypatch.setattr(hardware, "cpu_native", lambda dtype: dtype == torch.float32)
    code = main(["train", str(tiny_corpus), "--out", str(tmp_path / "r"), "--precision", precision, *TINY_FLAGS])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and lacking in err and "--precision fp32" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_a_non_finite_step_restarts_the_rows_and_the_learning_rate_recovers(tiny_corpus, tmp_path, caplog):
    from gentext.models import RNNLanguageModel

    calls = {"n": 0}
    forward = RNNLanguageModel.forward

    def sometimes_nan(self, ids, state=None, targets=None):
        out, new_state = forward(self, ids, state, targets)
        if self.training:
            calls["n"] += 1
            if calls["n"] == 3:
                return out * float("nan"), new_state
            if calls["n"] == 4:
                assert state is None  # the window after a skipped one starts cold
        return out, new_state

    RNNLanguageModel.forward = sometimes_nan
    try:
        with caplog.at_level(logging.WARNING):
            gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=20, **TINY_SETTINGS)
    finally:
        RNNLanguageModel.forward = forward
    progress = json.loads(_train_state(tmp_path / "run")[1]["progress"])
    assert "non-finite loss at step 3" in caplog.text
    assert progress["bad_steps"] == 0 and 0.5 < progress["lr_scale"] < 1.0  # halved, then growing back
    metrics = [r for r in checkpoint.read_metrics(tmp_path / "run") if "lr" in r]
    assert metrics[-1]["lr"] > 0


def test_every_token_forbidden_ends_the_sample_with_a_warning(trained_run, caplog):
    model = gentext.load(trained_run)
    with caplog.at_level(logging.WARNING):
        text = model.generate("", max_new_tokens=400, no_repeat_ngram_size=1, seed=0)[0]
    assert "every token is forbidden" in caplog.text
    assert len(text) <= model.tokenizer.vocab_size and len(set(text)) == len(text)  # each token at most once
    streamed = "".join(model.stream("", max_new_tokens=400, no_repeat_ngram_size=1, seed=0))
    assert streamed == text


def test_all_masked_sampling_from_the_cli_exits_cleanly(trained_run, capsys):
    assert main(["generate", str(trained_run), "--no-repeat-ngram-size", "1", "--max-new-tokens", "400"]) == 0


@pytest.fixture(scope="module")
def unicode_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("unicode")
    corpus = root / "u.txt"
    corpus.write_text(UNICODE_TEXT, encoding="utf-8")
    runs = {}
    for level, extra in (("char", {}), ("word", {}), ("bpe", {"vocab_size": 300})):
        runs[level] = root / level
        gentext.train(runs[level], paths=[str(corpus)], level=level, steps=30, **extra, **TINY_SETTINGS)
    return runs


@pytest.mark.slow
@pytest.mark.parametrize("level", ["char", "word", "bpe"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_generating_on_accents_cjk_and_emoji(unicode_runs, level, seed):
    model = gentext.load(unicode_runs[level])
    settings = dict(max_new_tokens=60, temperature=1.5, seed=seed)
    generated = model.generate(PROMPT, **settings)[0]
    pieces = list(model.stream(PROMPT, **settings))
    assert "".join(pieces) == generated
    # ... and the incremental decoder gives what decoding the whole sequence at once gives
    from gentext.inference.generation import continuation
    from tests.conftest import generated_ids

    ids = model.tokenizer.encode(PROMPT).tolist()
    new = generated_ids(model.model, ids, max_new_tokens=60, temperature=1.5, seed=seed)[0]
    whole = model.tokenizer.decode(ids + new)
    assert continuation(model.tokenizer, ids, new) == whole[len(model.tokenizer.decode(ids)) :]


def test_a_character_split_across_bpe_tokens_is_held_back_until_complete(unicode_runs):
    tok = gentext.load(unicode_runs["bpe"]).tokenizer
    from gentext.data.decoding import _byte_level_alphabet

    to_char = {byte: char for char, byte in _byte_level_alphabet().items()}
    single = [tok.hf.token_to_id(to_char[b]) for b in "🙂".encode()]  # one token per byte of the emoji
    decoder = tok.decoder()
    out = [decoder.step(i) for i in single]
    assert out == ["", "", "", "🙂"] and decoder.flush() == ""
    cut = tok.decoder()
    assert [cut.step(i) for i in single[:2]] == ["", ""] and cut.flush() == "\ufffd"  # a cut character, at the end


def test_stop_strings_take_backslash_escapes_as_typed_in_a_shell(trained_run, capsys):
    model = gentext.load(trained_run)
    full = model.generate("The", max_new_tokens=200, seed=4)[0]
    assert "\n" in full[3:]
    code = main(
        ["generate", str(trained_run), "--prompt", "The", "--max-new-tokens", "200", "--seed", "4"] + ["--stop", "\\n"]
    )
    out = capsys.readouterr().out
    assert code == 0 and out == full[: full.index("\n", 3)] + "\n"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_with_a_run_directory_only_rank_0_can_see(tiny_corpus, tmp_path):
    """Each rank works in its own directory with a relative --out, as on separate machines: only
    rank 0 has the run directory. Training, a resume, and the result must match one process (two
    ranks equal one process: test_resume; a third launch for the straight two-rank run cost 16 s)."""
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import os, sys\n"
        "rank = os.environ['RANK']\n"
        "os.makedirs(f'node{rank}', exist_ok=True); os.chdir(f'node{rank}')\n"
        "os.environ['GENTEXT_CACHE'] = os.path.abspath('cache')\n"
        "from gentext.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    # float32: two ranks' shards equal one process's batch in float32 arithmetic, not in the bf16
    # autocast that is the default where the CPU has native bf16 (1e-5 apart after 20 steps there)
    flags = [*TINY_FLAGS, "--state-reset", "0.3", "--precision", "fp32"]

    def torchrun(out, *args):
        port = str(_free_port())
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port]
        command += [str(launcher), "train", str(tiny_corpus), "--out", out, *args]
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1"}
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-3000:]

    torchrun("run", "--steps", "10", *flags)
    assert (tmp_path / "node0" / "run" / TRAIN_STATE).is_file() and not (tmp_path / "node1" / "run").exists()
    torchrun("run", "--resume", "--steps", "20")
    assert not (tmp_path / "node1" / "run").exists()
    assert main(["train", str(tiny_corpus), "--out", str(tmp_path / "straight"), "--steps", "20", *flags]) == 0
    resumed, _ = _train_state(tmp_path / "node0" / "run")
    uninterrupted, _ = _train_state(tmp_path / "straight")
    resumed = {k: v for k, v in resumed.items() if k.startswith(("model.", "state."))}
    assert resumed.keys() == {k for k in uninterrupted if k.startswith(("model.", "state."))}
    assert all(torch.allclose(resumed[k], uninterrupted[k], atol=1e-6) for k in resumed)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_gpu_run_evaluates_samples_resumes_and_generates(tiny_corpus, tmp_path, precision):
    samples = []
    run = tmp_path / "run"
    settings = {**TINY_SETTINGS, "eval_every": 5}
    summary = gentext.train(
        run, paths=[str(tiny_corpus)], steps=10, device="cuda", precision=precision,
        on_eval=lambda step, val, model: samples.append(model.generate("The", max_new_tokens=10, seed=0)[0]),
        **settings,
    )  # fmt: skip
    assert summary["steps"] == 10 and len(samples) == 2
    gentext.train(run, resume=True, steps=15)
    model = gentext.load(run, device="cuda")
    assert model.generate("The", max_new_tokens=20, seed=1) == model.generate("The", max_new_tokens=20, seed=1)
    assert len(model.generate("The", max_new_tokens=20, num_beams=3, num_samples=2)) == 2
    assert (
        "".join(model.stream("The", max_new_tokens=20, seed=2)) == model.generate("The", max_new_tokens=20, seed=2)[0]
    )
