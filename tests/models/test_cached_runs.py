"""Runs that keep a neural cache: trained, saved, loaded, generated from, evaluated and served
(models/cache.py, training/caching.py)."""

import json
import math
import re

import numpy as np
import pytest
import torch

import gentext
from gentext import checkpoint
from gentext.cli import main
from gentext.models import cache as cache_module
from gentext.models.cache import CacheModel, cache_probs
from gentext.models.scoring import ROW_TOKENS, evaluate
from gentext.training import caching
from tests.conftest import TINY_SETTINGS, assert_batches_as_alone

# A text that repeats itself at a distance: a random "name" of 12 letters recurs through the text,
# which a cache copies after one sighting and a few steps of network training cannot know.
RNG = np.random.default_rng(3)
NAMES = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), 12)) for _ in range(40)]
TEXT = "".join(f"{name} said yes. {name} said no.\n" for name in NAMES for _ in range(3))


def test_a_generation_keeps_its_prompt_in_the_cache_and_not_its_samples(cached_run, monkeypatch):
    """Every surface generates through the engine: its prompt is read as given text, the tokens
    it draws as samples (a cache that kept them looped: "of tfoly of tfoly")."""
    calls = []

    def spy(y, ids, cache, theta, vocab, targets=None, remember=True, gate=0.0):
        calls.append((ids.shape[1], remember))
        return cache_probs(y, ids, cache, theta, vocab, targets, remember, gate)

    monkeypatch.setattr(cache_module, "cache_probs", spy)
    model = gentext.load(cached_run[0] / "run")
    model.generate("said yes", max_new_tokens=6, temperature=0)
    assert calls[0] == (len("said yes"), True) and calls[1:] == [(1, False)] * 5


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    (root / "t.txt").write_text(TEXT, encoding="utf-8")
    settings = {**TINY_SETTINGS, "cache_window": 100}  # --neural-cache 100
    with pytest.MonkeyPatch.context() as patch:  # a tiny network's outputs are too alike for a gated cache
        patch.setattr(caching, "GATE", 0.0)
        summary = gentext.train(root / "run", paths=[str(root / "t.txt")], steps=30, val_fraction=0.3, **settings)
    return root, summary


@pytest.mark.slow
def test_a_run_keeps_the_cache_it_fitted_and_loads_with_it(cached_run, capsys):
    root, summary = cached_run
    spec = json.loads((root / "run" / "config.json").read_text())["cache"]
    assert spec == {key: summary["cache"][key] for key in ("window", "theta", "weight", "gate", "similarity")}
    assert gentext.load(root / "run").info()["cache"] == spec
    assert main(["info", str(root / "run")]) == 0
    assert f"a neural cache of its last {spec['window']} outputs (cosine)" in capsys.readouterr().out
    assert summary["cache"]["val_loss"] < summary["cache"]["net_val_loss"]
    model = gentext.load(root / "run")
    assert isinstance(model.model, CacheModel) and model.model.window == spec["window"]
    alone = gentext.load(root / "run", network_only=True)
    assert type(alone.model).__name__ == "RNNLanguageModel"
    assert model.evaluate()["loss"] < alone.evaluate()["loss"]  # the held-out split, which repeats the names


@pytest.mark.slow
def test_with_a_chain_the_cache_weight_is_fitted_again_with_the_chains(tmp_path, monkeypatch):
    monkeypatch.setattr(caching, "GATE", 0.0)  # a tiny network's outputs are too alike for a gated cache
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    settings = {**TINY_SETTINGS, "cache_window": 100, "mix_order": 3}
    summary = gentext.train(tmp_path / "run", paths=[str(tmp_path / "t.txt")], steps=30, val_fraction=0.3, **settings)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    mix = summary["mixture"]
    assert config["cache"]["weight"] == mix["cache_weight"] and 0 <= mix["cache_weight"] <= 1
    assert 0 < mix["fit_loss"] and math.isfinite(mix["val_loss"]) and mix["tokens"] > 0  # fitted, then reported
    model = gentext.load(tmp_path / "run")  # mixture -> cache -> network, the weights as fitted
    assert model.model.net.weight == pytest.approx(mix["cache_weight"]) and model.model.weight == mix["weight"]


def test_a_cached_run_generates_in_batches_and_beams_like_any_kind(cached_run):
    root, _ = cached_run
    model = gentext.load(root / "run")
    assert_batches_as_alone(model, ["said", "abc", "x"], 25)
    for fmt in ("int8", "fp32"):  # the network's weight format, under the cache
        model.model.set_weight_format(fmt, evaluate=True)
        assert math.isfinite(model.evaluate()["loss"])


def test_a_cached_model_evaluates_a_long_text_as_one_stream(cached_run):
    """Evaluation splits a long text into parallel rows, each starting cold; a cache starting
    empty in each would score worse than the model reads the text (and than training reports)."""
    model = gentext.load(cached_run[0] / "run")
    text = TEXT * 12  # long enough for five rows of the plain path
    ids = torch.as_tensor(np.asarray(model.tokenizer.encode(text)))[None]
    with torch.inference_mode():
        logp, _ = model.model(ids[:, :-1], targets=ids[:, 1:])
    one_stream = -float(logp.double().mean())
    assert model.evaluate(text=text)["loss"] == pytest.approx(one_stream, abs=1e-4)
    nats, count = evaluate(model.model, ids[0].numpy(), 256, "cpu", batch_size=16)
    assert nats / count == pytest.approx(one_stream, abs=1e-4)
    rows = count // ROW_TOKENS  # what the rows would have given, each starting with an empty cache
    length, cold = count // rows, 0.0
    with torch.inference_mode():
        for row in ids[:, : rows * length + 1].unfold(1, length + 1, length)[0]:
            cold -= float(model.model(row[None, :-1], targets=row[None, 1:])[0].double().sum())
    assert cold / (rows * length) > one_stream + 1e-3


@pytest.mark.slow
def test_the_cache_is_on_where_width_and_rate_are_chosen_and_bad_values_are_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(caching, "GATE", 0.0)  # a tiny network's outputs are too alike for a gated cache
    corpus = tmp_path / "t.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    flags = ["--hidden-size", "32", "--embed-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16"]
    base = ["train", str(corpus), "--steps", "20", "--quiet", "--val-fraction", "0.3", *flags]
    assert main([*base, "--out", str(tmp_path / "on"), "--mix-markov", "0", "--neural-cache", "100"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"neural cache of the network's last (25|50|100) outputs", out)  # the window chosen
    assert "--neural-cache 0 turns it off" in out
    assert "where it is sure" not in out  # ungated here: heard on every token, no share to report
    assert main([*base, "--out", str(tmp_path / "off"), "--mix-markov", "0"]) == 0  # steps, not a time limit: none
    assert checkpoint.read_config(tmp_path / "off").cache is None and "neural cache" not in capsys.readouterr().out
    timed = ["train", str(corpus), "--time-limit", "1s", "--quiet", "--val-fraction", "0.3", "--mix-markov", "0"]
    assert main([*timed, *flags, "--out", str(tmp_path / "timed")]) == 0  # a character LSTM on a time limit: on
    assert (
        checkpoint.read_config(tmp_path / "timed").train.cache_window == 2000
        and "neural cache" in capsys.readouterr().out
    )
    assert main([*timed, *flags, "--out", str(tmp_path / "timed_off"), "--neural-cache", "0"]) == 0
    assert checkpoint.read_config(tmp_path / "timed_off").cache is None
    assert main([*base, "--out", str(tmp_path / "bad"), "--neural-cache", "-3"]) == 2
    assert "--neural-cache must be >= 0" in capsys.readouterr().err


@pytest.mark.parametrize(("level", "extra"), [("char", []), ("word", []), ("bpe", ["--vocab-size", "300"])])
def test_the_cache_is_fitted_for_the_runs_token_level(level, extra, tmp_path, monkeypatch):
    """The level picks the cache (`caching.cache_kind`): words the paper's, characters and subwords
    the gated cosine one; it reaches the fit from the run's tokenizer."""
    levels = []
    real = caching.fit_cache
    monkeypatch.setattr("gentext.training.mixing.fit_cache", lambda *a, **k: levels.append(k["level"]) or real(*a, **k))
    corpus = tmp_path / "t.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    flags = ["--hidden-size", "32", "--embed-size", "16", "--num-layers", "1", "--batch-size", "4", "--seq-len", "16"]
    command = ["train", str(corpus), "--out", str(tmp_path / "run"), "--steps", "5", "--quiet", "--level", level]
    assert main([*command, *extra, *flags, "--val-fraction", "0.3", "--mix-markov", "0", "--neural-cache", "50"]) == 0
    assert levels == [level]


def test_a_broken_cache_entry_in_config_json_is_a_clear_error(cached_run, tmp_path):
    root, _ = cached_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "tokenizer.json", "markov.safetensors"):
        if (root / "run" / name).exists():
            (run / name).write_bytes((root / "run" / name).read_bytes())
    config = json.loads((root / "run" / "config.json").read_text())
    config["cache"]["window"] = -4
    (run / "config.json").write_text(json.dumps(config))
    assert main(["generate", str(run), "--max-new-tokens", "3"]) == 2
    config["cache"].update(window=100, gate=1.5)  # a share above 1
    (run / "config.json").write_text(json.dumps(config))
    assert main(["generate", str(run), "--max-new-tokens", "3"]) == 2


def test_a_run_saved_before_the_gate_loads_with_its_cache_heard_wherever_it_holds_something(cached_run, tmp_path):
    root, _ = cached_run
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.safetensors", "tokenizer.json"):
        (run / name).write_bytes((root / "run" / name).read_bytes())
    config = json.loads((root / "run" / "config.json").read_text())
    config["cache"].pop("gate")
    (run / "config.json").write_text(json.dumps(config))
    assert gentext.load(run).model.gate == 0.0
    config["cache"]["gate"] = 0.9
    (run / "config.json").write_text(json.dumps(config))
    assert gentext.load(run).model.gate == 0.9


def test_the_server_batches_requests_to_a_cached_run_as_the_api_generates_them(cached_run):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from gentext.server import ServerLimits, create_app

    root, _ = cached_run
    model = gentext.load(root / "run")
    client = TestClient(create_app({"run": model}, ServerLimits(max_new_tokens=50, max_num_samples=4)))
    body = {"prompt": "said ", "max_new_tokens": 20, "seed": 3, "num_samples": 3}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200
    assert response.json()["samples"] == model.generate("said ", max_new_tokens=20, seed=3, num_samples=3)
