import json
import math

import pytest
import torch

import gentext
from gentext import checkpoint
from gentext.errors import GentextError
from tests.conftest import TINY_SETTINGS, TINY_TEXT


def test_train_writes_a_self_describing_run(trained_run):
    names = {p.name for p in trained_run.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "metrics.jsonl"} <= names
    config = json.loads((trained_run / "config.json").read_text())
    assert config["format_version"] == 1
    assert config["model"]["vocab_size"] == len(set(TINY_TEXT))
    records = checkpoint.read_metrics(trained_run)
    assert any("val_loss" in r for r in records) and any("train_loss" in r for r in records)


@pytest.mark.slow
def test_training_lowers_the_loss(tiny_corpus, tmp_path):
    summary = gentext.train(tmp_path / "r", paths=[str(tiny_corpus)], steps=80, learning_rate=1e-2, **TINY_SETTINGS)
    records = checkpoint.read_metrics(tmp_path / "r")
    first = next(r["train_loss"] for r in records if "train_loss" in r)
    assert summary["train_loss"] < first - 0.5
    assert summary["steps"] == 80 and summary["tokens"] == 80 * 4 * 16


@pytest.mark.slow
def test_same_seed_same_run(tiny_corpus, tmp_path):
    a = gentext.train(tmp_path / "a", paths=[str(tiny_corpus)], steps=5, **TINY_SETTINGS)
    b = gentext.train(tmp_path / "b", paths=[str(tiny_corpus)], steps=5, **TINY_SETTINGS)
    assert a["val_loss"] == b["val_loss"]


def test_generate_starts_with_prompt_and_is_seeded(trained_run):
    model = gentext.load(trained_run)
    a = model.generate("The ", max_new_tokens=30, seed=3, num_samples=3)
    b = model.generate("The ", max_new_tokens=30, seed=3, num_samples=3)
    assert a == b
    assert len(a) == 3 and all(s.startswith("The ") and len(s) == 34 for s in a)
    assert model.generate("The ", max_new_tokens=30, seed=4) != a[:1]


def test_temperature_zero_gives_the_greedy_text(trained_run):
    model = gentext.load(trained_run)
    greedy = model.generate("The q", max_new_tokens=20, temperature=0)[0]
    # Greedy by hand: feed the whole growing text and take the argmax each time.
    tok, net = model.tokenizer, model.model
    ids = tok.encode("The q").tolist()
    with torch.no_grad():
        for _ in range(20):
            logits, _ = net(torch.tensor([ids]), None)
            ids.append(int(logits[0, -1].argmax()))
    assert greedy == tok.decode(ids)
    assert model.generate("The q", max_new_tokens=20, temperature=0, seed=99)[0] == greedy


def test_stream_yields_the_same_text_as_generate(trained_run):
    model = gentext.load(trained_run)
    streamed = "".join(model.stream("A ", max_new_tokens=25, seed=5))
    assert streamed == model.generate("A ", max_new_tokens=25, seed=5)[0]


def test_unknown_prompt_characters_are_named(trained_run):
    with pytest.raises(GentextError, match="never seen: '#'"):
        gentext.load(trained_run).generate("#The")


def test_evaluate_bpc_arithmetic(trained_run, tmp_path):
    text = "The lazy dog. "
    path = tmp_path / "eval.txt"
    path.write_text(text)
    result = gentext.load(trained_run).evaluate(paths=[str(path)])
    assert result["tokens"] == len(text) - 1  # every character but the first is predicted
    assert result["characters"] == len(text) - 1
    assert math.isclose(result["bpc"], result["loss"] / math.log(2))  # char level: 1 token = 1 char
    assert math.isclose(result["perplexity"], math.exp(result["loss"]))


def test_evaluate_defaults_to_the_validation_split(trained_run):
    result = gentext.load(trained_run).evaluate()
    val_chars = len(TINY_TEXT) - (len(TINY_TEXT) - int(len(TINY_TEXT) * 0.1))
    assert result["tokens"] == val_chars - 1
    assert result["loss"] > 0


def test_info_describes_the_run(trained_run):
    info = gentext.load(trained_run).info()
    assert info["model"]["kind"] == "lstm" and info["parameters"] > 0
    assert info["result"]["steps"] == 10
    assert info["cache"] is None and info["mixture"] is None  # trained with --mix-markov 0: the network alone


def test_unknown_setting_is_rejected(tmp_path):
    with pytest.raises(GentextError, match="unknown setting 'hiddn_size'"):
        gentext.train(tmp_path / "x", hiddn_size=3)


def test_a_preset_is_a_keyword_of_train_and_the_other_keywords_win(tiny_corpus, tmp_path):
    small = {"hidden_size": 16, "embed_size": 8, "num_layers": 1, "cache_window": 0, "mix_order": 0}
    gentext.train(tmp_path / "r", paths=[str(tiny_corpus)], preset="shakespeare-cpu", time_limit=None, steps=2, **small)
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    assert config["model"]["kind"] == "lstm" and config["model"]["hidden_size"] == 16  # the keyword won
    assert config["train"]["learning_rate"] == 4e-3 and config["model"]["dropout"] == 0.0  # the preset's
    with pytest.raises(GentextError, match="unknown preset 'nope'; known: ptb-cpu, shakespeare-cpu"):
        gentext.train(tmp_path / "x", paths=[str(tiny_corpus)], preset="nope")
    assert not (tmp_path / "x").exists()
