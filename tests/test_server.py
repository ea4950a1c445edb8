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

from .conftest import running_server  # noqa: E402


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


def test_gentext_serve_answers_on_loopback(trained_run):
    with running_server(trained_run) as url:
        request = urllib.request.Request(
            f"{url}/v1/generate",
            data=json.dumps({"prompt": "The ", "max_new_tokens": 10}).encode(),
            headers={"Content-Type": "application/json"},
        )
        data = json.loads(urllib.request.urlopen(request, timeout=30).read())
    assert data["samples"][0].startswith("The ") and len(data["samples"][0]) == 14


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
