"""A pretrained causal LM (Hugging Face format) as a gentext kind: a tiny GPT-2 made here, offline."""

import json
import re

import pytest
import torch

transformers = pytest.importorskip("transformers")

import gentext  # noqa: E402
from gentext.cli import main  # noqa: E402
from gentext.errors import GentextError  # noqa: E402
from gentext.training.trainer import TrainingInterrupted  # noqa: E402
from tests.conftest import TINY_SETTINGS, TINY_TEXT, ctrl_c_at, latest_weights  # noqa: E402  # noqa: E402

CONTEXT = 48  # short, so that generation and scoring slide past it


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    """A tiny GPT-2 (a few hundred thousand parameters) and its BPE tokenizer, saved with save_pretrained."""
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from gentext.data.tokenizers import BPETokenizer

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = BPETokenizer.fit(TINY_TEXT, vocab_size=300)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer.hf).save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_head=2, n_embd=64, n_positions=CONTEXT, vocab_size=tokenizer.vocab_size, bos_token_id=0,
        eos_token_id=0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    ids = torch.tensor([tokenizer.encode(TINY_TEXT[:2000]).tolist()[:CONTEXT]])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):  # a little training, so greedy text is not one repeated token
        loss = model(ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(folder)
    return folder


def test_greedy_text_equals_transformers_own_greedy_decode(gpt2_folder):
    model = gentext.load(gpt2_folder)
    assert model.model.config.kind == "pretrained"
    prompt = "The quick"
    ids = torch.tensor([model.tokenizer.encode(prompt).tolist()])
    hf = transformers.AutoModelForCausalLM.from_pretrained(gpt2_folder).eval()
    new = CONTEXT - ids.shape[1]  # as far as GPT-2's positions reach
    expected = hf.generate(ids, max_new_tokens=new, do_sample=False, pad_token_id=0)[0, ids.shape[1] :]
    text = model.generate(prompt, max_new_tokens=new, temperature=0)[0]
    assert text == prompt + model.tokenizer.decode(expected.tolist())


def test_generation_and_scoring_go_on_past_the_context(gpt2_folder):
    model = gentext.load(gpt2_folder)
    text = model.generate("The", max_new_tokens=3 * CONTEXT, seed=1)[0]
    streamed = "".join(model.stream("The", max_new_tokens=3 * CONTEXT, seed=1))
    assert streamed == text and len(model.tokenizer.encode(text)) > 2 * CONTEXT
    result = model.evaluate(text=TINY_TEXT[:3000])
    assert 0 < result["bpc"] < 20 and result["tokens"] > 3 * CONTEXT


@pytest.mark.slow
def test_compare_prints_markov_lstm_and_pretrained_in_one_table(gpt2_folder, tiny_corpus, tmp_path, capsys):
    gentext.train(tmp_path / "markov", paths=[str(tiny_corpus)], model="markov", order=4)
    gentext.train(tmp_path / "lstm", paths=[str(tiny_corpus)], steps=10, **TINY_SETTINGS)
    runs = [str(tmp_path / "markov"), str(tmp_path / "lstm"), str(gpt2_folder)]
    assert main(["compare", *runs, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["kind"].split("-")[0] for r in rows] == ["markov", "lstm", "pretrained"]
    assert all(r["bpc"] > 0 for r in rows)
    assert main(["compare", *runs]) == 0
    table = capsys.readouterr().out
    assert "pretrained" in table and "markov" in table and "lstm" in table


@pytest.mark.slow
def test_fine_tuning_resumes_bit_for_bit(gpt2_folder, tiny_corpus, tmp_path):
    settings = {"init_from": str(gpt2_folder), "steps": 12, "save_every": 4, "eval_every": 4, "seq_len": 16,
                "batch_size": 4, "precision": "fp32", "threads": 2}  # fmt: skip
    straight = tmp_path / "straight"
    gentext.train(straight, paths=[str(tiny_corpus)], **settings)
    stopped = tmp_path / "stopped"
    with pytest.raises(TrainingInterrupted):
        gentext.train(stopped, paths=[str(tiny_corpus)], on_eval=ctrl_c_at(4), **settings)
    gentext.train(stopped, paths=[str(tiny_corpus)], resume=True)
    a, b = latest_weights(straight), latest_weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    tuned = gentext.load(stopped)
    assert tuned.model.config.kind == "pretrained" and tuned.generate("The", max_new_tokens=5, seed=0)
    assert "safetensors" in {p.suffix.lstrip(".") for p in stopped.iterdir()}
    assert not list(stopped.glob("*.bin")) and not list(stopped.glob("*.pt"))


def test_the_server_streams_it_and_concurrent_requests_get_their_own_text(gpt2_folder):
    pytest.importorskip("fastapi")
    import threading

    from fastapi.testclient import TestClient

    from gentext.server import create_app

    model = gentext.load(gpt2_folder)
    client = TestClient(create_app({"gpt2": model}))
    alone = {seed: model.generate("The ", max_new_tokens=12, seed=seed)[0] for seed in range(8)}
    got = {}

    def ask(seed: int) -> None:
        body = {"prompt": "The ", "max_new_tokens": 12, "seed": seed}
        got[seed] = client.post("/v1/generate", json=body).json()["samples"][0]

    workers = [threading.Thread(target=ask, args=(seed,)) for seed in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert got == alone
    events = client.post("/v1/generate", json={"prompt": "The ", "max_new_tokens": 12, "seed": 3, "stream": True})
    assert "event: done" in events.text


def test_a_model_that_is_not_on_disk_is_one_line_and_exit_2(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["generate", "no-such-org/no-such-model"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "huggingface-cli download no-such-org/no-such-model" in err


def test_pickled_weights_are_refused(gpt2_folder, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(gpt2_folder, folder)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(GentextError, match="never loads pickled"):
        gentext.load(folder)


def test_eight_requests_are_batched_and_each_gets_its_text_alone(gpt2_folder):
    from gentext.inference.engine import Engine
    from gentext.inference.results import Collector

    model = gentext.load(gpt2_folder)
    engine = Engine(model, max_rows=16)
    collectors = []
    for seed in range(8):
        ids, config = model.request("The ", max_new_tokens=2 * CONTEXT, seed=seed)  # slides past the context
        collectors.append(Collector())
        engine.submit(ids, config, collectors[-1])
    engine.run_until_idle()
    assert engine.most_rows == 8  # one cohort: the caches are as long, so every step is one call
    for seed, collector in enumerate(collectors):
        assert collector.texts("The ") == model.generate("The ", max_new_tokens=2 * CONTEXT, seed=seed)


def test_eval_and_chat_on_a_pretrained_folder_with_and_without_json(gpt2_folder, tiny_corpus, capsys, monkeypatch):
    import io

    assert main(["eval", str(gpt2_folder), str(tiny_corpus)]) == 0
    assert re.search(r"^loss \d+\.\d+ nats/token", capsys.readouterr().out, re.M)
    assert main(["eval", str(gpt2_folder), str(tiny_corpus), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["bpc"] > 0
    monkeypatch.setattr("sys.stdin", io.StringIO("/max_new_tokens 6\n/temperature 0\nThe quick\n"))
    assert main(["chat", str(gpt2_folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == gentext.load(gpt2_folder).generate("The quick", max_new_tokens=6, temperature=0)[0]
