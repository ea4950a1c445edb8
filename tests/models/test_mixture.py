"""A network mixed with a Kneser-Ney chain (models/mixture.py, training/mixing.py)."""

import json
import math
import re

import numpy as np
import pytest
import torch

import gentext
from gentext import checkpoint
from gentext.cli import main
from gentext.conditions import Condition
from gentext.config import ModelConfig
from gentext.inference.textmodel import TextModel
from gentext.models import build_model
from gentext.models.mixture import fit_weight, fit_weights
from gentext.models.scoring import STREAM_WINDOW
from gentext.training.caching import _outputs
from gentext.training.mixing import components, fit_mixture, token_log_probs
from tests.conftest import TINY_SETTINGS, assert_batches_as_alone

# Two kinds of line: a chain learns the repeated phrases at once, a network their letters.
WORDS = zip(["cat", "dog", "fox", "owl"] * 60, ["red", "old", "big"] * 80, strict=True)
TEXT = "".join(f"the {w} sat on the {v} mat.\n" for w, v in WORDS)


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mix")
    (root / "t.txt").write_text(TEXT, encoding="utf-8")
    settings = {**TINY_SETTINGS, "mix_order": None}  # the default: mixed
    summary = gentext.train(root / "run", paths=[str(root / "t.txt")], steps=40, **settings)
    return root, summary


def test_the_weight_is_the_best_mixing_weight_on_the_tokens_it_is_fitted_on():
    rng = np.random.default_rng(0)
    net, chain = np.log(rng.uniform(0.01, 1, 500)), np.log(rng.uniform(0.01, 1, 500))
    weight = fit_weight(net, chain)

    def loglik(w):
        return np.log(w * np.exp(net) + (1 - w) * np.exp(chain)).mean()

    grid = np.linspace(0, 1, 1001)
    assert loglik(weight) >= max(loglik(w) for w in grid) - 1e-9
    assert fit_weight(np.log(np.full(50, 0.9)), np.log(np.full(50, 0.1))) > 0.99  # the better model takes it all
    assert fit_weight(np.log(np.full(50, 0.1)), np.log(np.full(50, 0.9))) < 0.01


def test_three_weights_are_the_best_mixture_of_three_models():
    rng = np.random.default_rng(1)
    columns = [np.log(rng.uniform(0.01, 1, 400)) for _ in range(3)]
    weights = fit_weights(columns)
    assert weights.shape == (3,) and abs(weights.sum() - 1) < 1e-9 and (weights >= 0).all()

    def loglik(w):
        return np.log(np.exp(np.stack(columns, 1)) @ w).mean()

    grid = [np.array([a, b, 1 - a - b]) for a in np.linspace(0, 1, 101) for b in np.linspace(0, 1 - a, 101)]
    assert loglik(weights) >= max(loglik(w) for w in grid) - 1e-9
    assert fit_weights(columns[:2])[0] == pytest.approx(fit_weight(*columns[:2]))  # two: the same as fit_weight


def test_the_chain_order_is_chosen_on_validation_text(tmp_path):
    # 6, 7 or 8 for characters: the fit keeps the one whose mixture scores best on the tokens it is fitted on
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="lstm", vocab_size=6, embed_size=4, hidden_size=8, num_layers=1)).eval()
    rng = np.random.default_rng(2)
    motif = rng.integers(0, 6, 300)  # long contexts repeat exactly: the longest order predicts best
    train, val = np.tile(motif, 20), np.tile(motif, 3)
    fitted = fit_mixture(net, train, val, (6, 7, 8), 16, "cpu")
    by_order = {o: fit_mixture(net, train, val, (o,), 16, "cpu")["fit_loss"] for o in (6, 7, 8)}
    assert by_order[fitted["order"]] <= min(by_order.values()) + 1e-4  # the best (a higher one: by more than 1e-4)
    assert fitted["fit_loss"] == pytest.approx(by_order[fitted["order"]])
    assert fitted["order"] == 8 and by_order[8] < by_order[6] - 0.01  # here the longest context wins


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_network_reads_its_stream_in_long_windows_with_the_training_windows_numbers(kind):
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind=kind, vocab_size=6, embed_size=4, hidden_size=8, num_layers=2)).eval()
    ids = np.random.default_rng(4).integers(0, 6, 3 * STREAM_WINDOW + 5)
    (long,) = components(net, ids, 16, "cpu")
    assert np.array_equal(long, token_log_probs(net, ids, 16, "cpu"))  # bit for bit, state carried either way
    stream = torch.from_numpy(ids)[None]  # the neural cache's fit reads outputs and log-probs so too
    (long_y, long_lp), (y, lp) = _outputs(net, stream, STREAM_WINDOW), _outputs(net, stream, 16)
    assert torch.equal(long_y, y) and torch.equal(long_lp, lp)


def test_the_reported_figure_is_on_tokens_nothing_was_fitted_on():
    # the first half of validation repeats the training text, the second does not: a figure on the
    # tokens the weights were fitted on would be far better than the honest one
    torch.manual_seed(0)
    net = build_model(ModelConfig(kind="lstm", vocab_size=6, embed_size=4, hidden_size=8, num_layers=1)).eval()
    rng = np.random.default_rng(3)
    motif = rng.integers(0, 6, 300)
    train, val = np.tile(motif, 20), np.concatenate([np.tile(motif, 2), rng.integers(0, 6, 600)])
    fitted = fit_mixture(net, train, val, (6,), 16, "cpu")
    assert fitted["fit_tokens"] == 600 and fitted["tokens"] == 599  # the rest of the 1,200
    assert fitted["fit_loss"] < 0.5 < fitted["val_loss"]  # the motif is learned by the chain; noise is not
    assert fitted["chain_val_loss"] > fitted["fit_loss"] + 0.5


@pytest.mark.slow
def test_a_default_run_is_mixed_and_scores_as_the_weighted_sum_of_its_parts(mixed_run):
    root, summary = mixed_run
    run = root / "run"
    spec = json.loads((run / "config.json").read_text())["mixture"]
    assert spec["order"] in (6, 7, 8) and 0.0 <= spec["weight"] <= 1.0 and (run / "markov.safetensors").exists()
    mix = summary["mixture"]
    assert mix["val_loss"] <= max(mix["net_val_loss"], mix["chain_val_loss"]) + 1e-6  # a mixture: never the worst
    mixed = gentext.load(run)
    alone = checkpoint.load_run(run, mix=False)
    net = TextModel(alone.model, alone.tokenizer, alone.config, condition=Condition())
    chain_lp = mixed.model.chain(torch.tensor([[0]]), None)  # the chain answers on the contract too
    assert chain_lp[0].shape[-1] == mixed.tokenizer.vocab_size
    text = "the owl sat on the red mat.\n"
    p_mixed = np.array([t["log_prob"] for t in mixed.score(text)["per_token"]])
    p_net = np.array([t["log_prob"] for t in net.score(text)["per_token"]])
    ids = mixed.tokenizer.encode(text).tolist()
    start = mixed._prompt("", None, None, None).ids
    inputs, targets = torch.tensor([start + ids[:-1]]), torch.tensor([start[1:] + ids])
    p_chain = mixed.model.chain(inputs, None, targets=targets)[0][0, len(start) - 1 :].double().numpy()
    w = spec["weight"]
    expected = np.log(w * np.exp(p_net) + (1 - w) * np.exp(p_chain))
    assert np.allclose(p_mixed, expected, atol=1e-4)


def test_the_mixture_generates_evaluates_and_batches_like_any_kind(mixed_run):
    root, _ = mixed_run
    model = gentext.load(root / "run")
    assert_batches_as_alone(model, ["the", "the cat", "a"], 30)
    assert math.isfinite(model.evaluate()["loss"])


def test_eval_of_a_mixed_runs_own_split_leaves_out_what_the_mixture_was_fitted_on(mixed_run, capsys):
    root, summary = mixed_run
    run, mix = root / "run", summary["mixture"]
    result = gentext.load(run).evaluate()
    val_tokens = json.loads((run / "config.json").read_text())["data"]["val_tokens"]
    assert result["fitted_tokens_left_out"] == mix["fit_tokens"] == val_tokens // 2  # a short split: its half
    assert result["tokens"] == val_tokens - 1 - mix["fit_tokens"] == mix["tokens"]  # the part training reported
    assert result["loss"] == pytest.approx(mix["val_loss"], abs=1e-4)  # so the same figure
    assert summary["sampled_val_loss"] == mix["val_loss"]
    alone = gentext.load(run, network_only=True).evaluate()  # the network was not fitted there: the whole split
    assert "fitted_tokens_left_out" not in alone and alone["tokens"] == val_tokens - 1
    assert main(["eval", str(run)]) == 0
    assert f"after its first {mix['fit_tokens']:,} tokens" in capsys.readouterr().out


def test_mix_markov_zero_trains_the_network_alone_and_bad_values_are_refused(tmp_path, capsys):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    summary = gentext.train(tmp_path / "plain", paths=[str(corpus)], steps=5, **TINY_SETTINGS)  # mix_order=0
    assert "mixture" not in summary and not (tmp_path / "plain" / "markov.safetensors").exists()
    assert type(gentext.load(tmp_path / "plain").model).__name__ == "RNNLanguageModel"
    assert main(["train", str(corpus), "--out", str(tmp_path / "x"), "--mix-markov", "-1"]) == 2
    assert "--mix-markov must be in 0..20" in capsys.readouterr().err


def test_the_command_line_says_what_the_mixture_gave(tmp_path, capsys):
    corpus = tmp_path / "t.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    flags = ["--hidden-size", "32", "--embed-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16"]
    assert main(["train", str(corpus), "--out", str(tmp_path / "r"), "--steps", "5", "--quiet", *flags]) == 0
    out = capsys.readouterr().out
    assert re.search("mixed with a Kneser-Ney chain of order [678] ", out) and "--mix-markov 0 turns it off" in out


def test_an_export_of_a_mixed_run_writes_the_network_and_says_so(mixed_run, caplog):
    root, _ = mixed_run
    path = root / "step.onnx"
    assert main(["export", str(root / "run"), "--format", "onnx", "--output", str(path)]) == 0
    assert path.stat().st_size > 0 and "the ONNX step is the network alone" in caplog.text


def test_no_mix_loads_the_network_alone_everywhere_a_run_is_loaded(mixed_run, capsys):
    root, summary = mixed_run
    run = str(root / "run")
    alone = gentext.load(run, network_only=True)
    assert type(alone.model).__name__ == "RNNLanguageModel"
    assert alone.evaluate()["loss"] != gentext.load(run).evaluate()["loss"]
    assert main(["eval", run, "--no-mix", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"] == alone.evaluate()["loss"]
    assert main(["generate", run, "--no-mix", "--max-new-tokens", "5", "--seed", "1"]) == 0
    assert capsys.readouterr().out.strip()
