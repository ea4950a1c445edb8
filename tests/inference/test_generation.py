"""Generation through a trained model: knobs that must equal greedy, stops, beams, batching, scoring."""

import math
import subprocess
import sys

import pytest
import torch

import gentext
from gentext.inference.generation import cut_at_stop

PROMPT = "The q"


@pytest.fixture(scope="module")
def model(trained_run):
    return gentext.load(trained_run)


def greedy(model, **kw):
    return model.generate(PROMPT, max_new_tokens=25, temperature=0, **kw)[0]


@pytest.mark.parametrize(
    "settings", [dict(top_k=1, temperature=1.0), dict(top_p=1e-6, temperature=1.0), dict(num_beams=1)]
)
def test_knobs_that_must_reduce_to_greedy(model, settings):
    assert model.generate(PROMPT, max_new_tokens=25, seed=3, **settings)[0] == greedy(model)


def test_beam_search_is_deterministic_and_finds_likelier_text_than_greedy(model):
    a = model.generate(PROMPT, max_new_tokens=20, num_beams=4, num_samples=2)
    assert a == model.generate(PROMPT, max_new_tokens=20, num_beams=4, num_samples=2)
    assert len(a) == 2 and a[0] != a[1]
    score = lambda text: model.score(text)["log_prob"]  # noqa: E731
    assert score(a[0]) >= score(greedy(model)[:25]) - 1e-4


def test_stop_strings_cut_before_the_stop(model):
    full = model.generate(PROMPT, max_new_tokens=60, seed=1)[0]
    stop = full[len(PROMPT) + 10 : len(PROMPT) + 12]
    cut = model.generate(PROMPT, max_new_tokens=60, seed=1, stop=[stop])[0]
    assert cut == PROMPT + cut_at_stop(full[len(PROMPT) :], [stop])[0]
    assert stop not in cut[len(PROMPT) :]
    assert "".join(model.stream(PROMPT, max_new_tokens=60, seed=1, stop=[stop])) == cut


def test_max_time_ends_generation_early(model):
    out = model.generate(PROMPT, max_new_tokens=100_000, max_time=0.05, seed=0)[0]
    assert len(PROMPT) < len(out) < len(PROMPT) + 100_000


def test_samples_run_as_one_batch(model, monkeypatch):
    calls = []
    forward = model.model.forward
    monkeypatch.setattr(model.model, "forward", lambda ids, state=None: calls.append(ids.shape) or forward(ids, state))
    samples = model.generate(PROMPT, max_new_tokens=10, num_samples=8, seed=0)
    assert len(samples) == 8 and len(set(samples)) > 1
    assert len(calls) == 1 + 9  # the prompt once, then one batched call per token (the last is never fed)
    assert calls[0] == (1, len(PROMPT)) and all(shape == (8, 1) for shape in calls[1:])


def test_repetition_controls_change_the_text(model):
    plain = greedy(model)
    assert (
        greedy(model, no_repeat_ngram_size=2) != plain
        or len(set(zip(plain, plain[1:], strict=False))) == len(plain) - 1
    )


def test_score_sums_per_token_values(model):
    text = "The lazy dog."
    result = model.score(text)
    assert result["tokens"] == len(text)
    assert math.isclose(result["log_prob"], sum(t["log_prob"] for t in result["per_token"]))
    assert math.isclose(result["bpc"], -result["log_prob"] / len(text) / math.log(2))
    assert "".join(t["token"] for t in result["per_token"]) == text
    assert result["log_prob"] < 0


@pytest.mark.slow
def test_cli_temperature_sweep_and_score_json(trained_run):
    run = [sys.executable, "-m", "gentext"]
    out = subprocess.run(
        [
            *run,
            "generate",
            str(trained_run),
            "--prompt",
            "The",
            "--temperature",
            "0.3,0.8,1.2",
            "--seed",
            "1",
            "--max-new-tokens",
            "10",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert [line for line in out.splitlines() if line.startswith("---")] == [
        "--- temperature 0.3 ---",
        "--- temperature 0.8 ---",
        "--- temperature 1.2 ---",
    ]
    score = subprocess.run([*run, "score", str(trained_run), "The dog", "--json"], capture_output=True, text=True)
    assert score.returncode == 0 and '"per_token"' in score.stdout


@pytest.mark.slow
def test_chat_streams_and_changes_settings(trained_run):
    session = "The \n/max_new_tokens 5\nThe \n/temperature -1\n/top_k abc\n/top-p 2\n/seed=3\n/settings seed=4\n/nope\n"
    proc = subprocess.run(
        [sys.executable, "-m", "gentext", "chat", str(trained_run), "--max-new-tokens", "8", "--temperature", "0"],
        input=session,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    model = gentext.load(trained_run)
    first = model.generate("The ", max_new_tokens=8, temperature=0)[0]
    second = model.generate("The ", max_new_tokens=5, temperature=0)[0]
    assert proc.stdout.startswith(f"{first}\nmax_new_tokens = 5\n{second}\nerror: --temperature must be >= 0")
    # the flags' parsers and rules, in the flags' words
    assert "error: --top-k: expected an integer, got 'abc'\nerror: --top-p must be in (0, 1], got 2.0" in proc.stdout
    assert "\nseed = 3\nerror: /settings shows them; /NAME VALUE sets one" in proc.stdout  # NAME=VALUE too
    assert proc.stdout.rstrip().endswith("error: unknown command /nope; /help lists them")


def test_generation_does_not_touch_global_rng(model):
    torch.manual_seed(0)
    before = torch.get_rng_state()
    model.generate(PROMPT, max_new_tokens=5, seed=1)
    assert torch.equal(before, torch.get_rng_state())
