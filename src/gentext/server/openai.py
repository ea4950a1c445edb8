"""The OpenAI completions API over the same engine, so tools that speak it (the `openai` package,
LangChain, curl recipes, load generators) work against gentext unchanged.

    GET  /v1/models       {"object": "list", "data": [{"id", "object": "model", ...}]} (+ gentext's own fields)
    POST /v1/completions  {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop",
                           "seed", "stream", "echo"} -> a text_completion, or its chunks as SSE

The settings map onto SampleConfig (max_tokens -> max_new_tokens, n -> num_samples) and pass the
same checks as /v1/generate, so a completion is the text /v1/generate returns for the same seed,
less the prompt (unless `echo`). OpenAI's defaults apply (16 tokens, temperature 1). Fields
gentext cannot honour (logprobs, presence/frequency penalties, best_of) are refused when set.
"""

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any, Literal

from gentext.server.requests import checked_settings, conditions, unprocessable
from gentext.useconfig import SampleConfig

CREATED = int(time.time())


def completion_request(limits):
    from pydantic import BaseModel, ConfigDict, Field

    class CompletionRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str | None = None
        prompt: str | list[str] = Field("", max_length=64)
        max_tokens: int | None = 16
        temperature: float | None = 1.0
        top_p: float | None = 1.0
        n: int = 1
        stop: str | list[str] | None = None
        seed: int | None = None
        stream: bool = False
        echo: bool = False
        logprobs: int | None = None
        presence_penalty: float | None = 0.0
        frequency_penalty: float | None = 0.0
        best_of: int | None = None
        user: str | None = Field(None, max_length=256)
        stream_options: dict[str, Any] | None = None
        suffix: Literal[None] = None

    return CompletionRequest


def _settings(request, limits) -> dict[str, Any]:
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(request, name):
            raise unprocessable(name, f"{name} is not supported (use /v1/generate's repetition_penalty)")
    if request.logprobs:
        raise unprocessable("logprobs", "logprobs is not supported (POST /v1/score gives per-token log-probabilities)")
    if request.best_of not in (None, request.n):
        raise unprocessable("best_of", "best_of must equal n")
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    settings = {
        **{f: getattr(SampleConfig, f) for f in SampleConfig.__dataclass_fields__ if f != "stop"},
        "max_new_tokens": 16 if request.max_tokens is None else request.max_tokens,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "num_samples": request.n,
        "stop": stops,
        "seed": request.seed,
    }
    return checked_settings(settings, limits)


def add_openai_routes(app, service) -> None:
    from sse_starlette import EventSourceResponse

    from gentext.server import describe

    CompletionRequest = completion_request(service.limits)  # noqa: N806 -- a class

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        native = [{"name": name, **describe(model)} for name, model in service.models.items()]
        data = [{"id": name, "object": "model", "created": CREATED, "owned_by": "gentext"} for name in service.models]
        return {"object": "list", "data": data, "models": native}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        model = service.pick(request.model)
        name = request.model or service.default
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not prompts or any(len(p) > service.limits.max_prompt_chars for p in prompts):
            raise unprocessable("prompt", f"one to 64 prompts of at most {service.limits.max_prompt_chars} characters")
        settings = _settings(request, service.limits)
        for prompt in prompts:
            conditions(model, SimpleNamespace(prompt=prompt))
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        if request.stream:
            if len(prompts) != 1 or request.n != 1:
                raise unprocessable("stream", "streaming sends one completion: one prompt and n = 1")
            chunks = _chunks(service.stream(model, name, prompts[0], settings), ident, name, prompts[0], request, model)
            return EventSourceResponse(chunks, sep="\n", ping=15)
        choices = []
        for prompt in prompts:
            samples = await service.samples(model, name, prompt, settings)
            for sample in samples:
                choices.append(_choice(model, prompt, sample, len(choices), request, settings["max_new_tokens"]))
        used = [c.pop("_tokens") for c in choices]
        prompt_tokens = sum(len(model.tokenizer.encode(p)) for p in prompts)
        return {
            "id": ident,
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": sum(used),
                "total_tokens": prompt_tokens + sum(used),
            },
        }


def _choice(model, prompt: str, sample: str, index: int, request, budget: int) -> dict[str, Any]:
    text = sample[len(prompt) :]
    tokens = len(model.tokenizer.encode(text)) if text else 0
    return {
        "text": sample if request.echo else text,
        "index": index,
        "logprobs": None,
        "finish_reason": "length" if tokens >= budget else "stop",
        "_tokens": tokens,
    }


async def _chunks(events, ident: str, name: str, prompt: str, request, model):
    """gentext's stream events as OpenAI completion chunks, ending with finish_reason and [DONE]."""
    prompt_left = len(prompt)  # the stream starts by echoing the prompt
    generated = []

    def chunk(piece: str, finish: str | None) -> dict[str, str]:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
        body = {"id": ident, "object": "text_completion", "created": int(time.time()), "model": name}
        return {"data": json.dumps({**body, "choices": [choice]})}

    async for event in events:
        data = json.loads(event["data"])
        if event["event"] == "token":
            piece = data["text"]
            cut = min(prompt_left, len(piece))
            prompt_left -= cut
            generated.append(piece[cut:])
            shown = piece if request.echo else piece[cut:]
            if shown:
                yield chunk(shown, None)
        elif event["event"] == "error":
            yield {"data": json.dumps({"error": {"message": data["detail"], "type": "server_error"}})}
            return
        else:
            text = "".join(generated)
            tokens = len(model.tokenizer.encode(text)) if text else 0
            budget = 16 if request.max_tokens is None else request.max_tokens
            yield chunk("", "length" if tokens >= budget else "stop")
    yield {"data": "[DONE]"}
