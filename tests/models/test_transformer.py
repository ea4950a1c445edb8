"""The Transformer: its KV cache is a state like any other, and every command works with it."""

import json

import pytest
import torch

import gentext
from gentext.cli import main
from gentext.config import ModelConfig
from gentext.models import build_model
from tests.conftest import TINY_SETTINGS

SETTINGS = {**TINY_SETTINGS, "kind": "transformer", "num_heads": 2, "context": 16, "learning_rate": 3e-3}


def make(context=24, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(
        kind="transformer", vocab_size=30, hidden_size=32, num_heads=4, num_layers=2, context=context, **kw
    )
    return build_model(cfg).eval()


def test_the_kv_cache_gives_the_full_pass_logits_for_300_tokens_past_the_context():
    model = make(context=24)
    ids = torch.randint(0, 30, (2, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full, _ = model(ids, None)  # a banded causal mask: each position sees the 24 tokens ending there
        state, steps = None, []
        for t in range(300):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
    assert (full - torch.cat(steps, dim=1)).abs().max() <= 1e-4
    assert state.tensors["k0"].shape[2] == 23 and state.tensors["pos"].tolist() == [300, 300]


def test_a_state_continued_twice_keeps_each_continuation_apart():
    # generation appends keys and values in place into a buffer with room (models/room.py);
    # a second continuation of the same state (a shared prompt, beams) must not overwrite the first's
    model = make(context=24)
    prompt = torch.randint(0, 30, (1, 10), generator=torch.Generator().manual_seed(1))
    first_tokens = [3, 4, 5, 6, 8]
    with torch.inference_mode():
        _, state = model(prompt, None)
        _, first = model(torch.tensor([first_tokens[:1]]), state)
        for token in first_tokens[1:4]:
            _, first = model(torch.tensor([[token]]), first)
        second, _ = model(torch.tensor([[7]]), state)  # the prompt's state again
        last, _ = model(torch.tensor([first_tokens[4:]]), first)  # the first branch goes on
        fresh_second, _ = model(torch.cat([prompt, torch.tensor([[7]])], dim=1), None)
        fresh_first, _ = model(torch.cat([prompt, torch.tensor([first_tokens])], dim=1), None)
    assert (second[:, -1] - fresh_second[:, -1]).abs().max() <= 1e-4
    assert (last[:, -1] - fresh_first[:, -1]).abs().max() <= 1e-4


@pytest.mark.slow
def test_greedy_text_from_the_cache_equals_recomputing_the_window_each_step(tmp_path, tiny_corpus):
    gentext.train(tmp_path / "t", paths=[str(tiny_corpus)], steps=30, **SETTINGS)
    model = gentext.load(tmp_path / "t")
    cached = model.generate("The ", max_new_tokens=60, temperature=0)[0]  # 64 tokens: past the context of 16
    ids = model.tokenizer.encode("The ").tolist()
    with torch.no_grad():
        for _ in range(60):
            logits, _ = model.model(torch.tensor([ids]), None)  # the whole text again, every step
            ids.append(int(logits[0, -1].argmax()))
    assert cached == model.tokenizer.decode(ids)


@pytest.mark.slow
def test_held_out_loss_holds_past_the_context(tmp_path, tiny_corpus):
    gentext.train(tmp_path / "t", paths=[str(tiny_corpus)], steps=60, **SETTINGS)
    model = gentext.load(tmp_path / "t")
    ids = torch.tensor([model.tokenizer.encode(tiny_corpus.read_text()[:400]).tolist()])
    with torch.no_grad():
        logits, _ = model.model(ids[:, :-1], None)
    nll = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:], reduction="none")
    inside, beyond = nll[:16].mean(), nll[16:].mean()
    assert torch.isfinite(nll).all() and beyond < inside + 0.5  # no cliff after `context` tokens


@pytest.mark.slow
def test_a_transformer_run_generates_serves_compares_and_refuses_onnx(tmp_path, tiny_corpus, capsys):
    run = tmp_path / "t"
    gentext.train(run, paths=[str(tiny_corpus)], steps=20, **SETTINGS)
    model = gentext.load(run)
    assert len(model.generate("The", max_new_tokens=10, num_samples=5, seed=0)) == 5
    assert len(model.generate("The", max_new_tokens=10, num_beams=3, num_samples=2)) == 2
    assert (
        "".join(model.stream("The", max_new_tokens=20, seed=1)) == model.generate("The", max_new_tokens=20, seed=1)[0]
    )
    assert model.score("The lazy dog.")["tokens"] == 13

    from fastapi.testclient import TestClient

    from gentext.server import create_app

    client = TestClient(create_app({"t": model}))
    assert "event: done" in client.post("/v1/generate", json={"prompt": "The", "stream": True}).text

    gentext.train(tmp_path / "lstm", paths=[str(tiny_corpus)], steps=10, **TINY_SETTINGS)
    gentext.train(tmp_path / "markov", paths=[str(tiny_corpus)], kind="markov", order=3)
    assert main(["compare", str(run), str(tmp_path / "lstm"), str(tmp_path / "markov"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert sorted(r["kind"] for r in rows) == ["lstm", "markov-3", "transformer"]
    assert main(["export", str(run)]) == 2
    assert "no network to export" in capsys.readouterr().err


def test_heads_must_divide_the_width():
    from gentext.errors import GentextError

    with pytest.raises(GentextError, match="--num-heads"):
        build_model(ModelConfig(kind="transformer", vocab_size=9, hidden_size=30, num_heads=4))


@pytest.mark.slow
def test_a_transformer_trains_under_torchrun_with_two_processes(tmp_path, tiny_corpus):
    import os
    import subprocess
    import sys

    flags = [
        "--model",
        "transformer",
        "--num-heads",
        "2",
        "--context",
        "16",
        "--hidden-size",
        "32",
        "--num-layers",
        "1",
    ]
    flags += ["--batch-size", "4", "--seq-len", "16", "--steps", "8", "--eval-every", "4", "--quiet", "--json"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "gentext"]
    done = subprocess.run(
        [*launch, "train", str(tiny_corpus), "--out", str(tmp_path / "t"), *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MASTER_ADDR": "127.0.0.1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["steps"] == 8
    assert gentext.load(tmp_path / "t").generate("The", max_new_tokens=5, seed=0)


def test_requests_that_arrive_together_are_batched_with_their_own_text(tmp_path, tiny_corpus):
    from gentext.inference.engine import Engine
    from gentext.inference.results import Collector

    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=10, **SETTINGS)
    model = gentext.load(tmp_path / "run")
    engine = Engine(model, max_rows=8)
    collectors = {}
    for prompt, seed in [("The ", 1), ("The ", 2), ("A stitch", 3), ("The ", 4)]:
        ids, config = model.request(prompt, max_new_tokens=40, seed=seed)
        collectors[(prompt, seed)] = Collector()
        engine.submit(ids, config, collectors[(prompt, seed)])
    engine.run_until_idle()
    assert engine.most_rows >= 3  # the three "The " requests stepped as one batch
    for (prompt, seed), collector in collectors.items():
        assert collector.texts(prompt) == model.generate(prompt, max_new_tokens=40, seed=seed)
