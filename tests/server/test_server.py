"""The HTTP API, in process (FastAPI's TestClient) and as `gentext serve` on 127.0.0.1."""

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import gentext  # noqa: E402
from gentext.server import ServerLimits, create_app  # noqa: E402
from tests.servers import running_server  # noqa: E402


@pytest.fixture(scope="module")
def client(trained_run):
    model = gentext.load(trained_run)
    return TestClient(create_app({"tiny": model}, ServerLimits(max_new_tokens=100, max_num_samples=4)))


def test_generate_json_is_seeded_and_starts_with_the_prompt(client, trained_run):
    body = {"prompt": "The ", "max_new_tokens": 20, "seed": 3, "num_samples": 2}
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 200
    data = response.json()
    assert data["samples"] == gentext.load(trained_run).generate("The ", max_new_tokens=20, seed=3, num_samples=2)
    assert data["prompt_tokens"] == 4 and data["completion_tokens"] == [20, 20]


def test_generate_streams_server_sent_events(client, trained_run):
    body = {"prompt": "A ", "max_new_tokens": 15, "seed": 1, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [e for e in response.read().decode().split("\n\n") if e]
    tokens = [json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: token")]
    assert events[-1].startswith("event: done")
    assert "".join(tokens) == gentext.load(trained_run).generate("A ", max_new_tokens=15, seed=1)[0]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"max_new_tokens": 101}, "max_new_tokens"),
        ({"num_samples": 5}, "num_samples"),
        ({"temperature": -1}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"model": "nope"}, "model"),
    ],
)
def test_out_of_range_values_get_422_naming_the_field(client, body, field):
    response = client.post("/v1/generate", json=body)
    assert response.status_code == 422
    assert field in json.dumps(response.json()["detail"])


def test_unknown_characters_get_400_naming_them(client):
    response = client.post("/v1/generate", json={"prompt": "#The"})
    assert response.status_code == 400 and "'#'" in response.json()["detail"]


def test_score_models_health_docs_and_playground(client):
    score = client.post("/v1/score", json={"text": "The lazy dog."}).json()
    assert score["tokens"] == 13 and score["log_prob"] < 0
    listed = client.get("/v1/models").json()["models"]
    assert [(m["name"], m["kind"], m["level"]) for m in listed] == [("tiny", "lstm", "char")]
    assert listed[0]["parameters"] > 0
    assert client.get("/healthz").json()["status"] == "ok"
    assert client.get("/openapi.json").status_code == 200
    page = client.get("/").text
    assert "Generate" in page and "Three temperatures" in page and "/v1/generate" in page


def test_requests_beyond_the_queue_get_503_at_once(trained_run):
    model = gentext.load(trained_run)
    app = create_app({"tiny": model}, ServerLimits(max_concurrency=1, max_queue=0, max_new_tokens=100_000))
    client = TestClient(app)
    slow = {"prompt": "The ", "max_new_tokens": 100_000}
    worker = threading.Thread(target=lambda: client.post("/v1/generate", json={**slow, "max_new_tokens": 3000}))
    worker.start()
    time.sleep(0.3)
    started = time.perf_counter()
    busy = client.post("/v1/generate", json={"prompt": "The ", "max_new_tokens": 5})
    assert busy.status_code == 503 and time.perf_counter() - started < 2
    worker.join()
    assert client.post("/v1/generate", json={"prompt": "The ", "max_new_tokens": 5}).status_code == 200


@pytest.mark.slow
def test_gentext_serve_answers_on_loopback(trained_run):
    with running_server(trained_run) as url:
        request = urllib.request.Request(
            f"{url}/v1/generate",
            data=json.dumps({"prompt": "The ", "max_new_tokens": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert data["samples"][0].startswith("The ") and len(data["samples"][0]) == 14


def test_each_request_gets_one_access_line_with_its_route_and_status_streamed_or_not(client, caplog):
    with caplog.at_level("INFO", logger="gentext.access"):
        with client.stream("POST", "/v1/generate", json={"prompt": "A ", "max_new_tokens": 5, "stream": True}) as r:
            r.read()
        client.post("/v1/generate", json={"prompt": "A ", "max_new_tokens": -1})
        client.get("/no/such/path")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gentext.access"]
    assert [(line["path"], line["status"]) for line in lines] == [
        ("/v1/generate", 200),
        ("/v1/generate", 422),
        ("/no/such/path", 404),
    ]
    assert all(line["method"] in ("GET", "POST") and line["ms"] >= 0 for line in lines)
    metrics = client.get("/metrics").text
    assert 'gentext_requests_total{path="other",status="404"}' in metrics


@pytest.mark.slow
def test_a_client_that_disconnects_mid_stream_stops_its_generation(trained_run):
    import http.client

    flags = [
        "--max-concurrency",
        "1",
        "--max-queue",
        "0",
        "--max-new-tokens-limit",
        "1000000",
        "--request-timeout",
        "600",
    ]
    with running_server(trained_run, *flags) as url:
        port = int(url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = json.dumps({"prompt": "The ", "max_new_tokens": 1000000, "stream": True})
        connection.request("POST", "/v1/generate", body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status == 200 and response.read1(64).startswith(b"event: token")
        connection.close()  # walk away mid-stream: a million tokens would take many minutes

        request = urllib.request.Request(
            f"{url}/v1/generate",
            data=json.dumps({"prompt": "The ", "max_new_tokens": 5}).encode(),
            headers={"Content-Type": "application/json"},
        )
        deadline, status = time.time() + 45, None
        while time.time() < deadline and status != 200:
            try:
                status = urllib.request.urlopen(request, timeout=10).status
            except urllib.error.HTTPError as exc:
                status = exc.code  # 503 while the abandoned generation still holds the only slot
                time.sleep(0.2)
        assert status == 200


def _post(url: str, body: dict, headers: dict | None = None, timeout: float = 120):
    request = urllib.request.Request(
        url + "/v1/generate",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    return urllib.request.urlopen(request, timeout=timeout).read().decode()


def _stream_text(raw: str) -> tuple[str, str]:
    events = [e for e in raw.split("\n\n") if e]
    text = "".join(json.loads(e.split("data: ", 1)[1])["text"] for e in events if e.startswith("event: token"))
    return text, events[-1].split("\n", 1)[0]


@pytest.mark.slow
def test_concurrent_streams_and_requests_all_complete_with_the_text_each_gets_alone(trained_run):
    from concurrent.futures import ThreadPoolExecutor

    model = gentext.load(trained_run)
    bodies = [{"prompt": "The ", "max_new_tokens": 120, "seed": seed, "temperature": 1.0} for seed in range(8)]
    alone = [model.generate(b["prompt"], max_new_tokens=120, seed=b["seed"], temperature=1.0)[0] for b in bodies]
    with running_server(trained_run, "--max-concurrency", "8", "--max-queue", "16") as url:
        with ThreadPoolExecutor(16) as pool:
            streams = [pool.submit(_post, url, {**b, "stream": True}) for b in bodies]
            plain = [pool.submit(_post, url, b) for b in bodies]
            stream_results = [_stream_text(f.result()) for f in streams]
            plain_results = [json.loads(f.result())["samples"][0] for f in plain]
    assert [last for _, last in stream_results] == ["event: done"] * 8
    assert [text for text, _ in stream_results] == alone
    assert plain_results == alone


def test_unknown_fields_are_refused_and_every_sampling_option_is_taken(client):
    response = client.post("/v1/generate", json={"prompt": "The ", "temprature": 0.5})
    assert response.status_code == 422 and "temprature" in json.dumps(response.json())
    body = {"prompt": "The ", "max_new_tokens": 8, "num_beams": 3, "no_repeat_ngram_size": 2, "length_penalty": 0.5}
    beams = client.post("/v1/generate", json=body)
    assert beams.status_code == 200 and beams.json()["samples"][0].startswith("The ")


@pytest.mark.parametrize(
    "body, flag_message",
    [({"top_p": 1.5}, "--top-p must be in (0, 1]"), ({"num_beams": -1}, "--num-beams must be >= 0")],
)
def test_the_server_refuses_with_the_clis_message(client, trained_run, capsys, body, flag_message):
    from gentext.cli import main

    response = client.post("/v1/generate", json={"prompt": "The ", **body})
    assert response.status_code == 422 and flag_message in json.dumps(response.json())
    ((name, value),) = body.items()
    assert main(["generate", str(trained_run), "--" + name.replace("_", "-"), str(value)]) == 2
    assert flag_message in capsys.readouterr().err


def test_an_api_key_guards_every_endpoint_but_health(trained_run):
    model = gentext.load(trained_run)
    guarded = TestClient(create_app({"tiny": model}, ServerLimits(), api_key="s3cret"))
    assert guarded.get("/healthz").status_code == 200 and guarded.get("/healthz").json()["auth"] is True
    assert guarded.get("/").status_code == 200  # the page that asks for the key
    body = {"prompt": "The ", "max_new_tokens": 3}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        response = guarded.post("/v1/generate", json=body, headers=headers)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert guarded.get("/v1/models").status_code == 401
    ok = guarded.post("/v1/generate", json=body, headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200
    assert (
        guarded.get("/v1/models", headers={"Origin": "http://elsewhere.example"}).headers.get(
            "access-control-allow-origin"
        )
        is None
    )  # CORS stays off unless asked for


def test_cors_is_opt_in_per_origin(trained_run):
    model = gentext.load(trained_run)
    app = create_app({"tiny": model}, ServerLimits(), cors_origins=["http://localhost:3000"])
    response = TestClient(app).get("/v1/models", headers={"Origin": "http://localhost:3000"})
    assert response.headers["access-control-allow-origin"] == "http://localhost:3000"


def test_serving_beyond_loopback_without_a_key_warns(caplog, monkeypatch, trained_run):
    import uvicorn

    from gentext.server import running

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: None)
    with caplog.at_level("WARNING"):
        running.serve([str(trained_run)], "127.0.0.1", 0, ServerLimits())
        assert "without an API key" not in caplog.text
        running.serve([str(trained_run)], "0.0.0.0", 0, ServerLimits())
    assert "serving on 0.0.0.0 without an API key" in caplog.text


def test_a_bad_setting_never_reaches_the_batch(trained_run, monkeypatch):
    from gentext.inference.engine import Engine

    calls = []
    monkeypatch.setattr(Engine, "submit", lambda self, *a, **k: calls.append(a))
    client = TestClient(create_app({"tiny": gentext.load(trained_run)}, ServerLimits(max_concurrency=8)))
    assert client.post("/v1/generate", json={"prompt": "The ", "top_k": -1}).status_code == 422
    assert client.post("/v1/generate", json={"prompt": "#"}).status_code == 400
    assert calls == []


def test_without_batching_each_request_runs_alone_in_turn(trained_run):
    model = gentext.load(trained_run)
    app = create_app({"tiny": model}, ServerLimits(), batching=False)
    assert next(iter(app.state.service.engines.values())).max_rows == 1
    client = TestClient(app)
    body = {"prompt": "A ", "max_new_tokens": 15, "seed": 1, "stream": True}
    text, last = _stream_text(client.post("/v1/generate", json=body).text)
    assert last == "event: done" and text == model.generate("A ", max_new_tokens=15, seed=1)[0]
    plain = client.post("/v1/generate", json={**body, "stream": False, "num_samples": 2}).json()["samples"]
    assert plain == model.generate("A ", max_new_tokens=15, seed=1, num_samples=2)
