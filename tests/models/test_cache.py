"""A neural cache on a recurrent network (models/cache.py, training/caching.py; issue 30)."""

import json
import math
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import gentext
from gentext import checkpoint
from gentext.cli import main
from gentext.config import ModelConfig
from gentext.models import build_model
from gentext.models import cache as cache_module
from gentext.models.cache import EMPTY, PENDING, CacheModel, _top_share, cache_probs, empty_cache, fit_probs
from gentext.models.priming import reading_samples
from gentext.models.scoring import ROW_TOKENS, evaluate
from gentext.training import caching
from gentext.training.caching import GATE, fit_cache
from tests.conftest import TINY_SETTINGS

# A text that repeats itself at a distance: a random "name" of 12 letters recurs through the text,
# which a cache copies after one sighting and a few steps of network training cannot know.
RNG = np.random.default_rng(3)
NAMES = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), 12)) for _ in range(40)]
TEXT = "".join(f"{name} said yes. {name} said no.\n" for name in NAMES for _ in range(3))


def small_net(kind: str = "lstm", vocab: int = 9) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(kind=kind, vocab_size=vocab, embed_size=8, hidden_size=12, num_layers=2)).eval()


@pytest.mark.parametrize(("kind", "similarity"), [("lstm", "dot"), ("mingru", "dot"), ("lstm", "cosine")])
def test_the_cache_is_the_weighted_sum_of_the_network_and_a_softmax_over_its_recent_outputs(kind, similarity):
    net, window, theta, lam = small_net(kind), 5, 0.7, 0.25
    ids = torch.randint(0, 9, (2, 14), generator=torch.Generator().manual_seed(1))
    got, _ = CacheModel(net, window, theta, lam, similarity=similarity)(ids)
    with torch.inference_mode():
        h, _ = net.features(ids)
        h = torch.nn.functional.normalize(h, dim=-1) if similarity == "cosine" else h  # the cosine: unit outputs
        p_net = torch.softmax(net(ids)[0].double(), -1)
    for b in range(2):
        for t in range(14):
            slots = range(max(0, t - window), t)  # outputs before t, each followed by ids[b, i + 1]
            if not slots:  # nothing cached yet: the network alone
                expected = p_net[b, t]
            else:
                weights = torch.softmax(torch.stack([theta * h[b, t].double() @ h[b, i].double() for i in slots]), 0)
                p_cache = torch.zeros(9, dtype=torch.float64)
                for w, i in zip(weights, slots, strict=True):
                    p_cache[ids[b, i + 1]] += w
                expected = (1 - lam) * p_net[b, t] + lam * p_cache
            assert torch.allclose(got[b, t].exp().double(), expected, atol=1e-5)
    assert torch.allclose(got.exp().sum(-1), torch.ones(2, 14), atol=1e-5)  # a distribution at every position


def test_steps_append_to_the_window_in_place_and_a_state_continued_twice_keeps_each_apart():
    """Generation writes each new output into the window's buffer (models/room.py) instead of
    copying the window; a second continuation of one state (a shared prompt, beams) copies first,
    so neither sees the other's outputs: each equals the whole text read at once."""
    model, window = CacheModel(small_net(), 6, 0.7, 0.25), 6
    prompt, first, second = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8]]), [3, 1, 4, 1, 5], [2, 7]
    with torch.inference_mode():
        _, state = model(prompt)
        _, a = model(torch.tensor([first[:1]]), state)
        _, b = model(torch.tensor([first[1:2]]), a)
        assert _buffer(b) == _buffer(a) and b.tensors["cache.keys"].shape[1] == window  # written in place
        for token in first[2:4]:
            _, b = model(torch.tensor([[token]]), b)
        other, _ = model(torch.tensor([second]), state)  # the prompt's state again
        last, _ = model(torch.tensor([first[4:]]), b)
        whole_other, _ = model(torch.cat([prompt, torch.tensor([second])], 1))
        whole_first, _ = model(torch.cat([prompt, torch.tensor([first])], 1))
    assert torch.allclose(other[:, -1], whole_other[:, -1], atol=1e-5)
    assert torch.allclose(last[:, -1], whole_first[:, -1], atol=1e-5)


def test_the_models_own_samples_read_the_cache_but_are_not_kept_in_it():
    """Reading its own samples (the engine's steps), the model mixes in the cache of the given text
    as it stands: the samples are not added, and the last given output's follower (a sample) is
    never counted, not even once given text is read again."""
    net, theta, lam = small_net(), 0.7, 0.25
    model, prompt, samples = CacheModel(net, 6, theta, lam), [1, 2, 3, 4, 5], [3, 1]
    with torch.inference_mode():
        _, state = model(torch.tensor([prompt]))
        got, after = [], state
        with reading_samples():
            for token in samples:
                logp, after = model(torch.tensor([[token]]), after)
                got.append(logp[0, -1])
        h, _ = net.features(torch.tensor([prompt + samples]))
        p_net = torch.softmax(net(torch.tensor([prompt + samples]))[0][0].double(), -1)
        _, later = model(torch.tensor([[7, 8]]), after)  # given text again
    assert torch.equal(after.tensors["cache.keys"], state.tensors["cache.keys"])
    for step, t in enumerate(range(len(prompt), len(prompt) + len(samples))):
        slots = range(len(prompt) - 1)  # the prompt's outputs whose follower was given
        weights = torch.softmax(torch.stack([theta * h[0, t].double() @ h[0, i].double() for i in slots]), 0)
        p_cache = torch.zeros(9, dtype=torch.float64)
        for w, i in zip(weights, slots, strict=True):
            p_cache[prompt[i + 1]] += w
        assert torch.allclose(got[step].exp().double(), (1 - lam) * p_net[t] + lam * p_cache, atol=1e-5)
    # the window's followers: the prompt's (the last one's a sample: none), then the given text's
    assert later.tensors["cache.next"][0].tolist() == [3, 4, 5, EMPTY, 8, PENDING]


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


def _buffer(state) -> int:
    return state.tensors["cache.keys"].untyped_storage().data_ptr()


class ContextNet(torch.nn.Module):
    """A network whose output is its last three tokens, one-hot, and whose prediction is uniform:
    the same context gives the same output, another one at least a third of the way round. A
    trained network's outputs tell contexts apart; a small random one's are too alike for its cache
    ever to be sure."""

    def __init__(self, vocab: int):
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab)

    def features(self, ids, state=None):
        context = torch.cat([ids.new_zeros(ids.shape[0], 2) if state is None else state, ids], 1)
        y = torch.nn.functional.one_hot(context.unfold(1, 3, 1), self.config.vocab_size).flatten(2).float()
        return y, context[:, -2:]

    def readout(self, y, targets=None):
        uniform = torch.full((*y.shape[:2], self.config.vocab_size), -math.log(self.config.vocab_size))
        return uniform if targets is None else uniform.gather(2, targets[..., None])[..., 0]


def test_fitting_keeps_a_cache_where_text_repeats_and_none_where_it_cannot_help():
    motif = np.random.default_rng(0).integers(0, 50, 40)
    repeated = np.tile(motif, 30)  # the same 40 tokens again and again: what a cache is for
    noise = np.random.default_rng(1).integers(0, 50, 1200)  # never repeats in order: nothing to copy
    heard = {}
    for gate, net in ((0.0, small_net(vocab=50)), (GATE, ContextNet(50))):
        fitted = fit_cache(net, repeated, 16, "cpu", window=100, gate=gate)  # tries 25, 50, 100: 25 cannot reach back
        assert fitted is not None and fitted["val_loss"] < fitted["net_val_loss"] - 0.3  # a random net: flat outputs
        assert fitted["window"] in (50, 100) and 0 < fitted["weight"] <= 1 and fitted["gate"] == gate
        heard[gate] = fitted["heard"]
        assert fit_cache(net, noise, 16, "cpu", window=100, gate=gate) is None
    # gated: not before the motif's first repeat (no context seen yet); ungated: wherever it holds something
    assert 0 < heard[GATE] <= 1 - len(motif) / (len(repeated) - 1) < heard[0.0]


def test_characters_get_the_gated_cosine_cache_and_words_the_papers():
    """Over words the cache's spread falls on whole words, and the paper's cache (the dot product,
    heard everywhere) held out far better than a gated one; over characters it spells new names."""
    motif = np.random.default_rng(0).integers(0, 300, 40)
    fitted = fit_cache(small_net(vocab=300), np.tile(motif, 30), 16, "cpu", window=100)
    assert fitted is not None and (fitted["similarity"], fitted["gate"]) == ("dot", 0.0) and fitted["heard"] > 0.9
    fitted = fit_cache(ContextNet(50), np.tile(motif % 50, 30), 16, "cpu", window=100)
    assert fitted is not None and (fitted["similarity"], fitted["gate"]) == ("cosine", GATE)


def test_the_fit_scores_every_theta_as_the_running_cache_does():
    # fit_probs computes a window's products once for all thetas; each row must be what the cache
    # itself gives that theta (over more than one chunk of queries), and heard where it is
    torch.manual_seed(0)
    y, ids, targets = torch.randn(1, 700, 8), torch.randint(0, 9, (1, 700)), torch.randint(0, 9, (1, 700))
    for gate in (0.0, 0.9):
        probs, heard = fit_probs(y, ids, targets, 50, (0.3, 2.0, 8.0), gate, 9)
        for theta, row, row_heard in zip((0.3, 2.0, 8.0), probs, heard, strict=True):
            empty = empty_cache(1, 50, 8, "cpu")
            expected, expected_heard, _ = cache_probs(y, ids, empty, theta, 9, targets, gate=gate)
            assert torch.allclose(row, expected, atol=1e-6) and torch.equal(row_heard, expected_heard)
        assert not torch.allclose(probs[0], probs[1])  # the thetas differ
        assert bool(heard[..., 1:].all()) == (gate == 0)  # ungated: wherever it holds something
        assert bool(heard[2].any())  # gated: the sharpest theta is sure somewhere


def test_the_cache_is_heard_only_where_its_top_token_holds_the_gate():
    """Gated, the model is the ungated mixture where the cache's most likely token holds at least
    `gate` of its probability and the network alone elsewhere; scoring given tokens gates as the
    whole distribution does (what evaluation reads is what generation draws from)."""
    net, ids = small_net(), torch.randint(0, 9, (2, 40), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        p_net = net(ids)[0].log_softmax(-1)
        y, _ = net.features(ids)
        p_cache, filled, _ = cache_probs(y, ids, empty_cache(2, 12, 12, "cpu"), 200.0, 9)
        ungated, _ = CacheModel(net, 12, 200.0, 0.4)(ids)
        gated, _ = CacheModel(net, 12, 200.0, 0.4, gate=0.8)(ids)
        scored, _ = CacheModel(net, 12, 200.0, 0.4, gate=0.8)(ids[:, :-1], targets=ids[:, 1:])
    half_held = torch.arange(40) >= 6  # from the sixth output on, the window of 12 holds half its outputs
    heard = filled & (p_cache.amax(-1) >= 0.8) & half_held
    assert 0 < int(heard.sum()) < int((filled & half_held).sum())  # some positions sure, some not
    assert bool((filled[:, 1:6] & (p_cache[:, 1:6].amax(-1) >= 0.8)).any())  # sure among a few: not heard
    assert torch.allclose(gated[heard], ungated[heard]) and torch.allclose(gated[~heard], p_net[~heard], atol=1e-6)
    assert torch.allclose(scored, gated[:, :-1].gather(2, ids[:, 1:, None])[..., 0], atol=1e-6)


def test_the_top_share_over_the_slots_tokens_is_the_share_over_the_vocabulary():
    weights = torch.softmax(torch.randn(2, 5, 30, generator=torch.Generator().manual_seed(0)), -1)
    followers = torch.randint(0, 7, (2, 5, 30), generator=torch.Generator().manual_seed(1)) * 1000  # ids up to 6,000
    by_hand = torch.tensor([[max(float(w[f == t].sum()) for t in f.unique()) for w, f in zip(ws, fs, strict=True)]
                            for ws, fs in zip(weights, followers, strict=True)])  # fmt: skip
    assert torch.allclose(_top_share(weights, followers, 7000), by_hand)  # a wide vocabulary: the slots' tokens
    assert torch.allclose(_top_share(weights, followers // 1000, 7), by_hand)  # a narrow one: the vocabulary


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
    prompts = ["abc", "x", "said"]
    alone = [model.generate(p, max_new_tokens=25, seed=4, temperature=0.9)[0] for p in prompts]
    assert model.generate_many(prompts, max_new_tokens=25, seed=4, temperature=0.9) == alone  # one batch
    assert model.generate("said", max_new_tokens=10, num_beams=3)[0].startswith("said")
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
