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

from gentext.inference.events import Failed, Text
from gentext.inference.textmodel import TextModel
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
            events = service.events(model, name, prompts[0], settings)
            return EventSourceResponse(_chunks(events, ident, name, prompts[0], request), sep="\n", ping=15)
        choices, used = [], 0
        for prompt in prompts:
            samples, done = await service.samples(model, name, prompt, settings)
            for sample, reason, tokens in zip(samples, done.reasons, done.tokens, strict=True):
                text = sample if request.echo else sample[len(prompt) :]
                choice = {"text": text, "index": len(choices), "logprobs": None, "finish_reason": _finish(reason)}
                choices.append(choice)
                used += tokens
        prompt_tokens = sum(len(model.tokenizer.encode(p)) for p in prompts)
        return {
            "id": ident,
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used},
        }


def _finish(reason: str) -> str:
    """OpenAI's finish_reason: "stop" (a stop string or the end of text), else "length"."""
    return "stop" if reason == "stop" else "length"


async def _chunks(events, ident: str, name: str, prompt: str, request):
    """The engine's events as OpenAI completion chunks, ending with finish_reason and [DONE]."""

    def chunk(piece: str, finish: str | None) -> dict[str, str]:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}
        body = {"id": ident, "object": "text_completion", "created": int(time.time()), "model": name}
        return {"data": json.dumps({**body, "choices": [choice]})}

    if request.echo and prompt:
        yield chunk(prompt, None)
    async for event in events:
        if isinstance(event, Text):
            if event.pieces[0]:
                yield chunk(event.pieces[0], None)
        elif isinstance(event, Failed):
            yield {"data": json.dumps({"error": {"message": event.message, "type": "server_error"}})}
            return
        else:
            yield chunk("", _finish(event.reasons[0]))
    yield {"data": "[DONE]"}


def describe(model: TextModel) -> dict[str, Any]:
    info = model.info()
    return {
        "kind": info["model"]["kind"],
        "level": info["tokenizer"]["level"],
        "parameters": info["parameters"],
        "labels": model.labels,  # generation from a label: one of these in "label"
        "needs_source": model.pairs,  # a seq2seq run: "source" in every request
        "captions": model.captions,  # a captioner: POST /v1/caption with a picture
    }
