"""Runs ahead in the compiled kernels (runs.h): a lone row's and a request's many samples, drawn and
stepped several tokens a call, write the texts the Python path writes one token a step."""

import pytest

from gentext import native
from gentext.inference.jobs import AHEAD
from tests.native.counting import Counting
from tests.native.small import text_model, together_both

# requests under one temperature that end at different tokens (lengths, a stop string, a document's
# end in "lines" mode), one with several samples
REQUESTS = [
    ("the ", dict(seed=1, max_new_tokens=AHEAD + 3)),
    ("a", dict(seed=2, max_new_tokens=3 * AHEAD, stop=["e"])),
    ("to ", dict(seed=3, num_samples=3, max_new_tokens=2 * AHEAD + 1)),
    ("", dict(seed=4, max_new_tokens=1)),
    ("b", dict(seed=5, max_new_tokens=3 * AHEAD + 2)),
]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru", "mingru"])
def test_a_lone_row_drawn_ahead_in_compiled_runs_writes_the_token_by_token_text(kind, kernels):
    """The engine's compiled run of a lone plain row (draws and steps in one call) against the
    Python path, one token a step: the same text, where a run ends mid-way (a stop string, the end
    of a document, the length), streamed or whole."""
    cases = [
        ("stream", dict(max_new_tokens=1)),
        ("stream", dict(max_new_tokens=2)),
        ("stream", dict(max_new_tokens=AHEAD + 1, temperature=0.7)),
        ("stream", dict(max_new_tokens=2 * AHEAD + 3, temperature=0)),  # greedy: no draws
        ("lines", dict(max_new_tokens=2 * AHEAD, temperature=0, stop=["a"])),
        ("stream", dict(max_new_tokens=3 * AHEAD + 5, stop=["e"])),
        ("lines", dict(max_new_tokens=3 * AHEAD, temperature=1.4)),
    ]
    counted, longest = Counting(kernels, "run_plain"), 0
    for fmt in ["fp32", "int8"]:
        for mode, settings in cases:
            for seed in range(4):
                model = text_model(kind, fmt, mode)
                python = model.generate("the ", seed=seed, **settings)
                longest = max(longest, len(python[0]))
                native.use(counted)
                try:
                    compiled = model.generate("the ", seed=seed, **settings)
                    streamed = "".join(model.stream("the ", seed=seed, **settings))
                finally:
                    native.use(None)
                assert compiled == python and [streamed] == python, (fmt, mode, settings, seed)
    assert longest > AHEAD + 4  # runs longer than one compiled call were compared
    assert counted.calls > 0  # and the compiled runs made them


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru", "mingru"])
def test_a_requests_samples_drawn_ahead_in_compiled_runs_write_the_token_by_token_texts(kind, kernels):
    """A batch's compiled run (`run_rows`: its draws and steps in one call) against the Python path,
    one token a step: the same texts, where samples end at different tokens (stop strings, the end
    of a document) and a run ends mid-way; 20 samples split their steps between threads."""
    cases = [
        ("stream", dict(num_samples=3, max_new_tokens=AHEAD + 3, temperature=0.8)),
        ("lines", dict(num_samples=20, max_new_tokens=3 * AHEAD, temperature=1.3)),
        ("stream", dict(num_samples=5, max_new_tokens=2 * AHEAD + 1, stop=["e"])),
        ("lines", dict(num_samples=4, max_new_tokens=2 * AHEAD, temperature=1.2, stop=[" a"])),
        ("stream", dict(num_samples=2, max_new_tokens=AHEAD + 3, temperature=0)),  # greedy: nothing drawn
    ]
    counted = Counting(kernels, "run_rows")
    for fmt in ["fp32", "int8"]:
        for mode, settings in cases:
            for seed in range(3):
                model = text_model(kind, fmt, mode)
                python = model.generate("the ", seed=seed, **settings)
                native.use(counted)
                try:
                    compiled = model.generate("the ", seed=seed, **settings)
                finally:
                    native.use(None)
                assert compiled == python, (fmt, mode, settings, seed)
    assert counted.calls > 0  # the compiled runs made them


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "mingru"])
def test_requests_drawing_together_run_ahead_to_the_texts_each_gets_alone(kind, kernels):
    """Requests under the same plain settings in one batch take their tokens in compiled runs
    together (`run_rows`, each row's numbers from its own request's generator; greedy ones draw
    none): the texts of the Python path's token-by-token steps, and each request's text alone."""
    for fmt, mode, temperature in [("fp32", "stream", 1.2), ("int8", "lines", 1.2), ("int8", "stream", 0)]:
        model = text_model(kind, fmt, mode)
        requests = [(prompt, {**settings, "temperature": temperature}) for prompt, settings in REQUESTS]
        python, compiled, calls = together_both(model, requests, kernels)
        assert python == [model.generate(prompt, **settings) for prompt, settings in requests]
        assert compiled == python, (fmt, mode, temperature)
        assert max(calls) > 1  # requests ran ahead together
        if (mode, temperature) == ("stream", 1.2):  # elsewhere some end within a few tokens
            assert max(calls) == len(requests) - 1  # all but the one-token one, which ends at the first step


@pytest.mark.parametrize("mixed", [False, True])
def test_requests_that_choose_each_token_step_together_token_by_token(kernels, mixed):
    """Requests whose tokens are chosen in Python (top-k), or whose plain settings differ, never
    run ahead together; their texts are still the Python path's."""
    model = text_model("lstm", "fp32")
    settings = [dict(temperature=1.0, top_k=3)] * 3 if not mixed else [dict(temperature=t) for t in (0.9, 1.0, 0)]
    requests = [(prompt, {**extra, **chosen}) for (prompt, extra), chosen in zip(REQUESTS[:3], settings, strict=True)]
    python, compiled, calls = together_both(model, requests, kernels)
    assert compiled == python and calls == []
