"""The Markov baseline: Kneser-Ney probabilities, the shared model interface, safe save/load."""

import json
import math

import numpy as np
import pytest
import torch

import gentext
from gentext.config import ModelConfig
from gentext.models import MarkovModel
from tests.conftest import SHARED_DATA


def fitted(order=3, text="abracadabra abracadabra cadabra"):
    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    return MarkovModel(ModelConfig(kind="markov", vocab_size=len(vocab), order=order)).fit(ids), ids, vocab


@pytest.mark.parametrize("order", [1, 2, 3, 5])
def test_probabilities_are_positive_and_sum_to_one_even_for_unseen_contexts(order):
    model, ids, vocab = fitted(order)
    contexts = np.array([[-1] * (order - 1), list(ids[: order - 1]), [len(vocab) - 1] * (order - 1)])
    probs = model.distribution(contexts.reshape(3, order - 1))
    assert probs.shape == (3, len(vocab))
    assert np.all(probs > 0) and np.allclose(probs.sum(axis=1), 1.0)


def test_kneser_ney_prefers_seen_continuations():
    model, _, vocab = fitted(3)
    probs = model.distribution(np.array([[vocab.index("a"), vocab.index("b")]]))[0]
    assert vocab[int(probs.argmax())] == "r"  # "ab" is always followed by "r"


def test_chunked_state_equals_one_pass():
    model, ids, _ = fitted(4)
    x = torch.from_numpy(ids[None, :20])
    full, _ = model(x, None)
    first, state = model(x[:, :7], None)
    second, _ = model(x[:, 7:], state)
    assert torch.allclose(torch.cat([first, second], dim=1), full)


def test_train_save_load_generate_eval_through_the_api(tmp_path, tiny_corpus):
    run = tmp_path / "markov"
    summary = gentext.train(run, paths=[str(tiny_corpus)], model=ModelConfig(kind="markov", order=4))
    assert summary["steps"] == 0 and math.isfinite(summary["val_loss"])
    assert "keys_4" in json.dumps(
        list(__import__("safetensors").safe_open(str(run / "model.safetensors"), "pt").keys())
    )
    model = gentext.load(run)
    assert model.evaluate()["loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    a = model.generate("The ", max_new_tokens=40, seed=1, num_samples=2)
    assert a == model.generate("The ", max_new_tokens=40, seed=1, num_samples=2)
    assert all(s.startswith("The ") and len(s) == 44 for s in a)
    assert model.generate("The ", max_new_tokens=10, num_beams=2)[0].startswith("The ")
    scored = model.score("The quick")
    assert scored["tokens"] == 9 and scored["log_prob"] < 0


def test_novelty_of_a_markov_model_is_measured(tmp_path, tiny_corpus):
    from gentext.inference.novelty import longest_copied_span, novelty

    assert longest_copied_span("xxhello worldyy", "say hello world!") == (11, "hello world")
    result = novelty(["abcdefgh"], "zzabcdzz", span=3)
    assert (result.windows, result.copied, result.longest_copy) == (6, 2, 4)
    run = tmp_path / "m"
    gentext.train(run, paths=[str(tiny_corpus)], model=ModelConfig(kind="markov", order=8))
    report = gentext.load(run).novelty(samples=2, max_new_tokens=200, seed=0)
    assert report["copied_share"] > 0.5  # an order-8 chain on a tiny repetitive text mostly copies it


def test_compare_table_through_the_cli(tmp_path, tiny_corpus, trained_run, capsys):
    from gentext.cli import main

    run = tmp_path / "m"
    gentext.train(run, paths=[str(tiny_corpus)], model=ModelConfig(kind="markov", order=3))
    assert main(["compare", str(trained_run), str(run), "--data", str(tiny_corpus), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["kind"] for r in rows] == ["lstm", "markov-3"]
    assert all(r["bpc"] > 0 and r["gen_tokens_per_s"] > 0 and r["level"] == "char" for r in rows)


@pytest.mark.skipif(not (SHARED_DATA / "tinyshakespeare.txt").exists(), reason="needs ../shared/data")
def test_order_7_markov_on_tiny_shakespeare_reaches_the_kneser_ney_reference(tmp_path):
    summary = gentext.train(
        tmp_path / "ts", paths=[str(SHARED_DATA / "tinyshakespeare.txt")], model=ModelConfig(kind="markov", order=7)
    )
    assert summary["val_loss"] <= 1.56


@pytest.mark.parametrize("rows", [1, 3, 40])  # one context at a time, and many at once
def test_a_generation_step_reads_the_same_distribution_as_the_whole_sequence(rows):
    """The step path (contexts kept, read one by one or together) gives the sequence pass's
    log-probabilities bit for bit, contexts with unknown (-1) positions included."""
    rng = np.random.default_rng(3)
    text = rng.integers(0, 9, 3000)
    text[::7] = 3  # some structure: frequent contexts, rare ones, unseen ones
    model = MarkovModel(ModelConfig(kind="markov", order=5, vocab_size=12)).fit(text)
    ids = torch.from_numpy(rng.integers(0, 12, (rows, 30)))
    with torch.inference_mode():
        whole, _ = model(ids)
        state, steps = None, []
        for t in range(ids.shape[1]):
            logits, state = model(ids[:, t : t + 1], state)
            steps.append(logits)
    assert torch.equal(torch.cat(steps, dim=1), whole)


@pytest.mark.parametrize("order", [1, 2, 5, 8])
def test_a_whole_row_is_every_word_looked_up_one_by_one(order):
    """`distribution` builds a row from each context's seen successors; it gives bit for bit what
    the interpolated recursion gives each word asked for alone (`_probabilities`), for contexts
    seen, unseen, cut short by unknown (-1) positions, and the empty one."""
    rng = np.random.default_rng(order)
    text = rng.integers(0, 9, 4000)
    text[::5] = 2  # frequent contexts beside rare ones
    model = MarkovModel(ModelConfig(kind="markov", order=order, vocab_size=11)).fit(text)  # 9, 10 never seen
    contexts = rng.integers(0, 11, (300, order - 1))
    if order > 1:
        contexts[:40] = np.lib.stride_tricks.sliding_window_view(text, order - 1)[:40]  # seen ones
        contexts[50:60, : min(2, order - 1)] = -1
    words = np.broadcast_to(np.arange(11), (len(contexts), 11))
    assert np.array_equal(model.distribution(contexts), model._probabilities(contexts, words))
