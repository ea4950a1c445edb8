"""The OpenAI completions API, driven by the official `openai` package against `gentext serve`."""

import json
import urllib.request

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from .conftest import running_server  # noqa: E402


def _generate(url: str, body: dict) -> dict:
    request = urllib.request.Request(url + "/v1/generate", data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_openai_client_gets_the_text_generate_gives(trained_run):
    with running_server(trained_run) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list().data] == [trained_run.name]

        settings = {"max_tokens": 20, "temperature": 0.8, "top_p": 0.9, "seed": 7}
        completion = client.completions.create(model=trained_run.name, prompt="The ", n=2, **settings)
        native = _generate(url, {"prompt": "The ", "max_new_tokens": 20, "temperature": 0.8, "top_p": 0.9,
                                 "seed": 7, "num_samples": 2})  # fmt: skip
        assert [c.text for c in completion.choices] == [s[len("The ") :] for s in native["samples"]]
        assert completion.usage.completion_tokens == sum(native["completion_tokens"])
        assert {c.finish_reason for c in completion.choices} <= {"length", "stop"}

        stream = client.completions.create(model=trained_run.name, prompt="The ", stream=True, **settings)
        pieces = list(stream)
        one = _generate(url, {"prompt": "The ", "max_new_tokens": 20, "temperature": 0.8, "top_p": 0.9, "seed": 7})
        assert "".join(p.choices[0].text for p in pieces) == one["samples"][0][len("The ") :]
        assert pieces[-1].choices[0].finish_reason in ("length", "stop")

        stopped = client.completions.create(model=trained_run.name, prompt="The ", stop=["e"], **settings)
        assert "e" not in stopped.choices[0].text

        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model=trained_run.name, prompt="The ", presence_penalty=1.0)
        with pytest.raises(openai.UnprocessableEntityError):
            client.completions.create(model="no-such-model", prompt="The ")
