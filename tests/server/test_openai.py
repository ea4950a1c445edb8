"""The OpenAI APIs, driven by the official `openai` package against `gentext serve`: completions
(with log-probabilities, echo, penalties, constrained output), chat completions, and the
tokenizer endpoints evaluation harnesses read."""

import json
import math
import urllib.request

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")

from tests.servers import start_server  # noqa: E402


def _post(url: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def served(trained_run):
    proc, url = start_server(trained_run)
    yield url, openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0), trained_run.name
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.slow
def test_the_openai_client_gets_the_text_generate_gives(served):
    url, client, name = served
    assert [m.id for m in client.models.list().data] == [name]
    settings = {"max_tokens": 20, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    completion = client.completions.create(model=name, prompt="The ", n=2, **settings)
    native = _post(url, "/v1/generate", {"prompt": "The ", "max_new_tokens": 20, "temperature": 0.8, "top_p": 0.9,
                                          "seed": 7, "num_samples": 2})  # fmt: skip
    assert [c.text for c in completion.choices] == [s[len("The ") :] for s in native["samples"]]
    assert completion.usage.completion_tokens == sum(native["completion_tokens"]) == 40
    assert [c.finish_reason for c in completion.choices] == ["length", "length"]

    stream = client.completions.create(model=name, prompt="The ", stream=True, **settings)
    pieces = list(stream)
    one = _post(url, "/v1/generate", {"prompt": "The ", "max_new_tokens": 20, "temperature": 0.8, "top_p": 0.9,
                                       "seed": 7})  # fmt: skip
    assert "".join(p.choices[0].text for p in pieces) == one["samples"][0][len("The ") :]
    assert pieces[-1].choices[0].finish_reason == "length"

    stopped = client.completions.create(model=name, prompt="The ", stop=["e"], **settings)
    assert "e" not in stopped.choices[0].text and stopped.choices[0].finish_reason in ("stop", "length")
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model=name, prompt="The ", presence_penalty=3.0)
    with pytest.raises(openai.UnprocessableEntityError):
        client.completions.create(model="no-such-model", prompt="The ")


def test_echoed_log_probabilities_are_the_scores_numbers(served):
    """lm-evaluation-harness's request: the start token an empty prompt is scored after, then the text."""
    url, client, name = served
    text = "The quick brown fox jumps."
    start = _post(url, "/tokenize", {"prompt": "x"}) and urllib.request.urlopen(url + "/tokenizer_info").read()
    start = json.loads(start)["eos_token"]
    echo = client.completions.create(model=name, prompt=start + text, echo=True, logprobs=5, max_tokens=0)
    lp = echo.choices[0].logprobs
    assert echo.choices[0].text == start + text and "".join(lp.tokens) == start + text
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(len(top) == 5 for top in lp.top_logprobs[1:])
    assert all(v >= max(top.values()) - 1e-6 or v <= max(top.values()) for v, top in
               zip(lp.token_logprobs[1:], lp.top_logprobs[1:], strict=True))  # fmt: skip
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(len(lp.tokens))]
    score = _post(url, "/v1/score", {"text": text})
    assert math.isclose(sum(lp.token_logprobs[1:]), score["log_prob"], abs_tol=1e-4)
    tokens = _post(url, "/tokenize", {"prompt": text})["tokens"]
    assert len(tokens) == len(lp.tokens) - 1 and _post(url, "/detokenize", {"tokens": tokens})["prompt"] == text


def test_generated_log_probabilities_and_penalties(served):
    url, client, name = served
    done = client.completions.create(model=name, prompt="The ", max_tokens=6, logprobs=2, seed=1)
    lp = done.choices[0].logprobs
    assert "".join(lp.tokens) == done.choices[0].text and len(lp.token_logprobs) == 6
    assert all(v < 0 and len(top) == 2 for v, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True))
    assert lp.text_offset[0] == len("The ")
    greedy = dict(model=name, prompt="The ", max_tokens=40, temperature=0)
    plain = client.completions.create(**greedy).choices[0].text
    varied = client.completions.create(**greedy, frequency_penalty=2.0, presence_penalty=2.0).choices[0].text
    assert plain != varied and len(set(varied)) >= len(set(plain))  # repeating costs: more different characters


@pytest.mark.slow
def test_chat_completions_stream_and_not_stop_at_the_next_turn(trained_run, tmp_path):
    import shutil

    run = tmp_path / "chatty"
    shutil.copytree(trained_run, run)  # the run's own speakers (chat.json): this text has no "User"
    template = {"names": {"user": "the fox", "assistant": "the dog"}, "turn": "{name}; {content}\n", "reply": "{name};"}
    (run / "chat.json").write_text(json.dumps(template))
    proc, url = start_server(run)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        messages = [{"role": "system", "content": "a short answer."}, {"role": "user", "content": "quick brown"}]
        reply = client.chat.completions.create(model="chatty", messages=messages, max_tokens=60, seed=3)
        text = reply.choices[0].message.content
        assert reply.choices[0].message.role == "assistant" and "\nthe fox;" not in text
        chunks = list(client.chat.completions.create(model="chatty", messages=messages, max_tokens=60, seed=3,
                                                     stream=True))  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == text
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        scored = client.chat.completions.create(model="chatty", messages=messages, max_tokens=5, seed=3,
                                                logprobs=True, top_logprobs=2)  # fmt: skip
        content = scored.choices[0].logprobs.content
        assert len(content) == 5 and all(len(t.top_logprobs) == 2 for t in content)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_transcript_in_characters_the_run_never_saw_is_a_400(served):
    _, client, name = served  # the default template's "User:": this text has no capital U
    with pytest.raises(openai.BadRequestError, match="never seen"):
        client.chat.completions.create(model=name, messages=[{"role": "user", "content": "The"}])


@pytest.mark.slow
def test_response_format_constrains_completions_and_chat(records_runs, tmp_path):
    import shutil

    run = tmp_path / "char"
    shutil.copytree(records_runs["char"], run)
    (run / "chat.json").write_text(json.dumps({"names": {"user": "name", "assistant": "age"}}))  # this text's words
    proc, url = start_server(run)
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
        fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
        reply = client.chat.completions.create(model="char", messages=[{"role": "user", "content": "eve"}],
                                               response_format=fmt, max_tokens=40, seed=1)  # fmt: skip
        assert isinstance(json.loads(reply.choices[0].message.content)["age"], int)
        done = client.completions.create(
            model="char",
            prompt="born ",
            max_tokens=20,
            seed=1,
            extra_body={"response_format": {"type": "regex", "regex": "[0-9]{4}"}},
        )
        assert done.choices[0].text.isdigit() and len(done.choices[0].text) == 4
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "path, raw",
    [
        ("/v1/generate", b'{"prompt": "\\ud800abc"}'),
        ("/v1/completions", b'{"prompt": ["The ", "\\udc00"]}'),
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud83d"}]}'),
        ("/v1/score", b'{"text": "x\\ud800"}'),
        ("/tokenize", b'{"prompt": "\\ud800"}'),
    ],
)
def test_a_lone_surrogate_is_a_422_naming_where(served, path, raw):
    url, _, _ = served
    request = urllib.request.Request(url + path, data=raw, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 422 and b"lone UTF-16 surrogate" in refused.value.read()
