"""The engine: requests join and leave one shared batch, each getting the text it gets alone."""

import threading

import pytest

import gentext
from gentext.errors import GentextError
from gentext.inference.engine import Engine
from gentext.inference.events import Done, Failed, Text
from gentext.inference.results import Collector

PROMPTS = ["The ", "A ", "Über café ", "The quick brown fox", "\n"]


@pytest.fixture(scope="module")
def model(trained_run):
    return gentext.load(trained_run)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=1.0, seed=3),
        dict(temperature=0.7, top_k=5, top_p=0.9, seed=4),
        dict(temperature=0),
        dict(temperature=1.2, repetition_penalty=1.5, no_repeat_ngram_size=3, stop=["o"], seed=5),
    ],
)
def test_generate_many_gives_each_prompt_its_text_alone(model, settings):
    many = model.generate_many(PROMPTS, max_new_tokens=40, **settings)
    assert many == [model.generate(p, max_new_tokens=40, **settings)[0] for p in PROMPTS]


def test_generate_many_refuses_what_cannot_share_a_batch(model):
    with pytest.raises(GentextError, match="one sample per prompt"):
        model.generate_many(PROMPTS, num_samples=2)
    with pytest.raises(GentextError, match="never seen"):
        model.generate_many(["#"])


def test_beam_requests_share_the_batch_and_each_equals_its_search_alone(model):
    engine = Engine(model, max_rows=64)
    settings = [dict(num_beams=4, num_samples=2), dict(num_beams=3, length_penalty=0.0), dict(num_beams=2)]
    found, steps = [], []
    for prompt, setting in zip(PROMPTS, settings * 2, strict=False):
        texts, done, emit = _collector(rows=setting.get("num_samples", 1))
        engine.submit(*model.request(prompt, max_new_tokens=25, **setting), emit)
        found.append((prompt, setting, texts, done))
    original = engine._step

    def step(cohort):
        steps.append(len(cohort.jobs))
        original(cohort)

    engine._step = step
    engine.run_until_idle()
    assert max(steps) == len(found)  # every beam request advanced in one network call
    for prompt, setting, texts, done in found:
        assert done.is_set()
        alone = model.generate(prompt, max_new_tokens=25, **setting)
        assert [prompt + "".join(sample) for sample in texts] == alone


def _collector(rows: int = 1):
    """(each sample's pieces, or the first sample's when rows is 1; a set-on-end Event; the listener)"""
    texts, done = ([] if rows == 1 else [[] for _ in range(rows)]), threading.Event()

    def emit(event):
        if isinstance(event, Text):
            if rows == 1:
                texts.append(event.pieces[0])
            else:
                for sample, piece in zip(texts, event.pieces, strict=True):
                    sample.append(piece)
        else:
            done.set()

    return texts, done, emit


def test_jobs_join_a_running_batch_and_leave_it_when_they_end(model):
    engine = Engine(model, max_rows=8)
    long_text, long_done, long_emit = _collector()
    started = threading.Event()

    def first(event):
        started.set()
        long_emit(event)

    ids, cfg = model.request("The ", max_new_tokens=300, temperature=1.0, seed=1)
    engine.submit(ids, cfg, first, start=True)
    assert started.wait(30)
    joined = []
    for i, prompt in enumerate(PROMPTS[:3]):  # arrive while the first one is running
        texts, done, emit = _collector()
        ids, cfg = model.request(prompt, max_new_tokens=20 + 10 * i, temperature=1.0, seed=10 + i)
        engine.submit(ids, cfg, emit, start=True)
        joined.append((prompt, 20 + 10 * i, 10 + i, texts, done))
    for prompt, tokens, seed, texts, done in joined:
        assert done.wait(60)
        assert prompt + "".join(texts) == model.generate(prompt, max_new_tokens=tokens, temperature=1.0, seed=seed)[0]
    assert long_done.wait(60)
    assert "The " + "".join(long_text) == model.generate("The ", max_new_tokens=300, temperature=1.0, seed=1)[0]
    assert engine.jobs == [] and engine.cohorts == []  # every row left


def test_log_probabilities_come_with_a_request_that_shares_its_draw_with_others(model):
    """Requests with the same settings draw together; the one that asks for log-probabilities still
    gets each token's: the text, ids and alternatives it gets alone, the values to float32's rounding
    (a batch's products round differently from one row's)."""
    engine, collectors = Engine(model, max_rows=8), []
    for prompt, logprobs in [("The ", 2), ("A ", None), ("The ", None)]:
        ids, cfg = model.request(prompt, max_new_tokens=12, temperature=0.9, seed=7, logprobs=logprobs)
        collectors.append(Collector())
        engine.submit(ids, cfg, collectors[-1])
    engine.run_until_idle()
    alone = model.complete("The ", max_new_tokens=12, temperature=0.9, seed=7, logprobs=2)[0]
    batched = collectors[0].completions("The ")[0]
    assert batched.text == alone.text and len(batched.logprobs) == len(alone.logprobs) == 12
    for got, expected in zip(batched.logprobs, alone.logprobs, strict=True):
        assert got["id"] == expected["id"] and [i for i, _ in got["top"]] == [i for i, _ in expected["top"]]
        assert got["logprob"] == pytest.approx(expected["logprob"], abs=1e-5)
        assert [v for _, v in got["top"]] == pytest.approx([v for _, v in expected["top"]], abs=1e-5)


def test_a_cancelled_job_leaves_at_the_next_step_and_the_others_go_on(model):
    engine = Engine(model, max_rows=8)
    a_texts, a_done, a_emit = _collector()
    b_texts, b_done, b_emit = _collector()
    ids, cfg = model.request("The ", max_new_tokens=100_000, seed=1)
    job = engine.submit(ids, cfg, a_emit)
    ids, cfg = model.request("A ", max_new_tokens=30, seed=2)
    engine.submit(ids, cfg, b_emit)
    job.cancelled.set()
    engine.run_until_idle()
    assert a_done.is_set() and b_done.is_set()
    assert "A " + "".join(b_texts) == model.generate("A ", max_new_tokens=30, seed=2)[0]


def test_rows_are_limited_and_waiting_jobs_get_their_turn(model):
    engine = Engine(model, max_rows=2)
    results = []
    for i in range(5):
        texts, done, emit = _collector()
        ids, cfg = model.request("The ", max_new_tokens=15, seed=i, num_samples=1)
        engine.submit(ids, cfg, emit)
        results.append((i, texts, done))
    seen = []
    original = engine._step

    def step(cohort):
        seen.append(sum(j.rows for j in engine.jobs))
        original(cohort)

    engine._step = step
    engine.run_until_idle()
    assert max(seen) == 2 and engine.most_rows == 2 and all(done.is_set() for _, _, done in results)
    for i, texts, _ in results:
        assert "The " + "".join(texts) == model.generate("The ", max_new_tokens=15, seed=i)[0]
    seen.clear()
    texts, done, emit = _collector(rows=3)  # more rows than the batch holds: it runs alone, in turn
    engine.submit(*model.request("The ", max_new_tokens=15, num_samples=3, seed=1), emit)
    engine.submit(*model.request("The ", max_new_tokens=15, seed=2), _collector()[2])
    engine.run_until_idle()
    assert done.is_set() and seen[0] == 3 and max(seen) == 3 and 1 in seen
    assert ["The " + "".join(t) for t in texts] == model.generate("The ", max_new_tokens=15, num_samples=3, seed=1)


def test_multi_sample_requests_take_several_rows(model):
    engine = Engine(model, max_rows=8)
    texts, done, emit = _collector(rows=3)
    ids, cfg = model.request("The ", max_new_tokens=25, num_samples=3, seed=7)
    engine.submit(ids, cfg, emit)
    engine.run_until_idle()
    assert ["The " + "".join(t) for t in texts] == model.generate("The ", max_new_tokens=25, num_samples=3, seed=7)


def test_a_request_hears_text_then_exactly_one_typed_end(model):
    engine = Engine(model, max_rows=8)
    heard = []
    engine.submit(*model.request("The ", max_new_tokens=5, seed=1, stop=["zzz"]), heard.append)
    engine.submit(*model.request("The ", max_new_tokens=5, seed=1), heard.append)
    engine.run_until_idle()
    ends = [e for e in heard if not isinstance(e, Text)]
    assert len(ends) == 2 and all(isinstance(e, Done) for e in ends)
    assert all(e.reasons == ["length"] and e.tokens == [5] for e in ends)
    assert Failed.of(GentextError("bad")).status == 400 and Failed.of(ValueError("bug")).status == 500
    assert Failed.of(ValueError("bug")).message == "internal error: ValueError"
