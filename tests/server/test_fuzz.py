"""Generated requests against the published OpenAPI schema (schemathesis): never a 5xx, and a good
request afterwards is still answered correctly. Bounded: a few dozen examples per endpoint."""

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

import gentext  # noqa: E402
from gentext.server import ServerLimits, create_app  # noqa: E402

GOOD = {"prompt": "The ", "max_new_tokens": 6, "seed": 2}


@pytest.fixture(scope="module")
def fuzzed(trained_run):
    model = gentext.load(trained_run)
    # small budgets so that generated requests that are valid finish fast
    limits = ServerLimits(max_new_tokens=20, max_num_samples=2, max_num_beams=2, request_timeout=2.0)
    app = create_app({"tiny": model}, limits)
    return app, model


def _operations(app) -> list:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.slow
def test_no_generated_request_gets_a_server_error(fuzzed):
    # schemathesis's own pytest plugin does not load under pytest 9: its strategies, driven here
    app, _ = fuzzed
    operations = _operations(app)
    assert {op.label for op in operations} >= {
        "POST /v1/generate", "POST /v1/completions", "POST /v1/chat/completions", "POST /v1/score", "POST /tokenize",
        "POST /detokenize",
    }  # fmt: skip
    statuses = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def check(case):
            response = case.call()
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{case.path}: {response.status_code} {response.text[:200]}"

        check()
    assert len(statuses) > 100 and any(400 <= s < 500 for s in statuses) and 200 in statuses


def test_after_the_fuzzing_a_good_request_gets_its_answer(fuzzed):
    app, model = fuzzed
    response = TestClient(app).post("/v1/generate", json=GOOD)
    assert response.status_code == 200
    assert response.json()["samples"] == model.generate("The ", max_new_tokens=6, seed=2)
    assert app.state.service.gate.count == 0
