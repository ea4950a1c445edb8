"""No request can break the server: every hostile request is a 4xx naming its field, one job's
failure ends that job alone, slots are freed on every path, and a good request still gets its answer."""

import base64
import io
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import gentext  # noqa: E402
from gentext.server import ServerLimits, create_app  # noqa: E402

GOOD = {"prompt": "The ", "max_new_tokens": 8, "seed": 1}


@pytest.fixture(scope="module")
def model(trained_run):
    return gentext.load(trained_run)


@pytest.fixture
def app(model):
    return create_app({"tiny": model}, ServerLimits(max_new_tokens=200, max_concurrency=4, max_queue=2))


def _in_flight(app) -> int:
    return app.state.service.gate.count


def _good_answer(client, model) -> None:
    response = client.post("/v1/generate", json=GOOD)
    assert response.status_code == 200, response.text
    assert response.json()["samples"] == model.generate(GOOD["prompt"], max_new_tokens=8, seed=1)


@pytest.mark.parametrize(
    "body, field",
    [
        ({"seed": 18446744073709551616}, "seed"),
        ({"seed": -1}, "seed"),
        ({"num_beams": 1000}, "num_beams"),
        ({"num_beams": 4, "length_penalty": 1e308}, "length_penalty"),
        ({"stop": ["x"] * 100}, "stop"),
        ({"stop": ["y" * 10_000]}, "stop"),
        ({"temperature": 1e300}, "temperature"),
        ({"top_k": 10**30}, "top_k"),
        ({"max_time": float("inf")}, "max_time"),
        ({"no_repeat_ngram_size": 10**9}, "no_repeat_ngram_size"),
        ({"prompt": "T" * 5000}, "prompt"),
    ],
)
def test_each_hostile_field_is_a_422_naming_it_and_the_server_stays_well(app, model, body, field):
    client = TestClient(app)
    content = json.dumps({**GOOD, **body})  # Infinity as Python's json reads it
    for _ in range(3):  # poison more than once: nothing may pile up
        response = client.post("/v1/generate", content=content, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text
        assert field in str(response.json()["detail"])
    assert _in_flight(app) == 0
    _good_answer(client, model)


def test_a_schema_naming_a_file_is_text_never_a_file_the_server_reads(app):
    """--json-schema @FILE is the CLI's; a request's "@/etc/hostname" is a (bad) schema, and a path
    that exists answers as one that does not: no file is read, nothing tells which exist."""
    client = TestClient(app)
    answers = [
        client.post("/v1/generate", json={**GOOD, "json_schema": path}) for path in ("@/etc/hostname", "@/no/such/file")
    ]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == answers[1].json() and "cannot read" not in answers[0].text


def test_forty_huge_seeds_then_a_good_request_is_answered(app, model):
    client = TestClient(app)
    assert all(client.post("/v1/generate", json={**GOOD, "seed": 2**64}).status_code == 422 for _ in range(40))
    _good_answer(client, model)
    assert _in_flight(app) == 0


def test_a_job_that_fails_while_priming_ends_alone(model, monkeypatch):
    from gentext.inference import jobs
    from gentext.inference.engine import Engine
    from gentext.inference.events import Done, Failed
    from gentext.inference.results import Collector

    real = jobs.make_generator

    def fails_for_seed_13(seed, device="cpu"):
        if seed == 13:
            raise OverflowError("seed out of range")
        return real(seed, device)

    monkeypatch.setattr(jobs, "make_generator", fails_for_seed_13)
    engine = Engine(model, max_rows=8)
    ids, good = model.request("The ", max_new_tokens=6, seed=1)
    _, bad = model.request("The ", max_new_tokens=6, seed=13)
    collectors = [Collector(), Collector(), Collector()]
    for config, collector in zip([good, bad, good], collectors, strict=True):
        engine.submit(ids, config, collector)
    engine.run_until_idle()
    assert [type(c.end) for c in collectors] == [Done, Failed, Done]
    assert collectors[1].end.status == 500 and collectors[1].end.message == "internal error: OverflowError"
    assert collectors[0].texts("The ") == model.generate("The ", max_new_tokens=6, seed=1)


def test_a_body_over_the_limit_is_413_before_it_is_read(app):
    from gentext.server.requests import MAX_BODY_BYTES

    client = TestClient(app)
    response = client.post(
        "/v1/generate",
        content=b'{"prompt": "' + b"a" * MAX_BODY_BYTES + b'"}',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 413 and "request body over" in response.json()["detail"]


def _png(width: int, height: int) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (width, height)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.slow
def test_a_decompression_bomb_is_refused_from_its_header(app):
    client = TestClient(app)
    response = client.post("/v1/caption", json={"image": _png(20_000, 20_000)})  # 400M pixels in ~1 MB
    assert response.status_code in (400, 413)
    assert _in_flight(app) == 0


def test_score_takes_unknown_skip_as_its_error_message_says(app):
    client = TestClient(app)
    refused = client.post("/v1/score", json={"text": "The #quick"})
    assert refused.status_code == 400 and "--unknown skip" in refused.json()["detail"]
    skipped = client.post("/v1/score", json={"text": "The #quick", "unknown": "skip"})
    assert skipped.status_code == 200 and skipped.json()["skipped_characters"] == 1


def test_beam_search_stops_at_max_time(model):
    started = time.perf_counter()
    results = model.generate("The ", num_beams=4, max_new_tokens=100_000, max_time=0.3)
    assert time.perf_counter() - started < 5 and results and len(results[0]) < 100_000


def test_a_client_gone_mid_stream_frees_its_place(app):
    client = TestClient(app)
    with client.stream("POST", "/v1/generate", json={**GOOD, "max_new_tokens": 200, "stream": True}) as response:
        next(response.iter_lines())
    deadline = time.time() + 10
    while _in_flight(app) and time.time() < deadline:
        time.sleep(0.05)
    assert _in_flight(app) == 0


def test_metrics_count_requests_and_tokens(app):
    client = TestClient(app)

    def value(text: str, name: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(name)]
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    before = client.get("/metrics").text
    client.post("/v1/generate", json=GOOD)
    client.post("/v1/generate", json={**GOOD, "seed": -1})
    after = client.get("/metrics").text
    assert value(after, "gentext_generated_tokens_total") - value(before, "gentext_generated_tokens_total") == 8
    assert 'gentext_requests_total{path="/v1/generate",status="422"}' in after
    assert value(after, 'gentext_requests_total{path="/v1/generate",status="200"}') >= 1


def test_separate_limits_for_rows_admission_and_threads(model):
    limits = ServerLimits(max_batch_rows=4, max_concurrency=3, max_queue=0, worker_threads=1)
    app = create_app({"tiny": model}, limits)
    service = app.state.service
    assert next(iter(service.engines.values())).max_rows == 4 and service.gate.limit == 3
    client = TestClient(app)
    body = {**GOOD, "max_new_tokens": 150, "stream": True}
    results = []

    def stream():
        with client.stream("POST", "/v1/generate", json=body) as response:
            results.append(response.status_code)
            for _ in response.iter_lines():
                pass

    workers = [threading.Thread(target=stream) for _ in range(5)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert sorted(results).count(200) >= 3 and set(results) <= {200, 503}
    assert service.gate.count == 0


@pytest.mark.parametrize(
    "path, poison",
    [
        ("/v1/generate", {"prompt": "The ", "seed": 2**70}),
        ("/v1/completions", {"prompt": "The ", "n": 10**9}),
        ("/v1/completions", {"prompt": ["The "] * 1000}),
        ("/v1/score", {"text": "The", "unknown": "maybe"}),
        ("/v1/caption", {"image": "not base64!"}),
        ("/v1/attention", {"source": "x" * 10**6}),
    ],
)
def test_poison_then_good_on_every_endpoint(app, model, path, poison):
    client = TestClient(app)
    for _ in range(5):
        status = client.post(path, json=poison).status_code
        assert 400 <= status < 500, status
    assert _in_flight(app) == 0
    _good_answer(client, model)
    completion = client.post("/v1/completions", json={"prompt": "The ", "max_tokens": 8, "seed": 1})
    assert completion.status_code == 200
    assert "The " + completion.json()["choices"][0]["text"] == model.generate("The ", max_new_tokens=8, seed=1,
                                                                               temperature=1.0)[0]  # fmt: skip
