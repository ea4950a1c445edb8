"""The OpenAI completions API over the same engine, so tools that speak it (the `openai` package,
LangChain, lm-evaluation-harness's `local-completions`, load generators) work against gentext.

    GET  /v1/models       {"object": "list", "data": [{"id", "object": "model", ...}]} (+ gentext's own fields)
    POST /v1/completions  {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
                           "stream", "echo", "logprobs", "presence_penalty", "frequency_penalty",
                           "response_format"} -> a text_completion, or its chunks as SSE

The settings map onto SampleConfig (max_tokens -> max_new_tokens, n -> num_samples) and pass the
same checks as /v1/generate, so a completion is the text /v1/generate returns for the same seed,
less the prompt (unless `echo`). OpenAI's defaults apply (16 tokens, temperature 1).

`logprobs: N` gives OpenAI's legacy format per token: its text, log-probability, the N most likely
alternatives and its offset in prompt + completion. With `echo` the prompt's tokens come first,
scored by the one scoring path of `/v1/score` and `gentext eval` (the first token's values are null:
nothing of the text comes before it); `max_tokens: 0` scores the prompt alone, which is what
evaluation harnesses ask. Generated tokens report the distribution the model gave them, before any
sampling setting reshaped it. `response_format` constrains the output (json_object, json_schema, or
gentext's {"type": "regex", "regex": ...}).
"""

import json
import time
import uuid
from types import SimpleNamespace
from typing import Any, Literal

from gentext.errors import GentextError
from gentext.inference.events import Done, Failed, Text
from gentext.inference.textmodel import TextModel
from gentext.server.requests import checked_settings, conditions, free_text, strict_base, unprocessable
from gentext.useconfig import MAX_LOGPROBS, SampleConfig

CREATED = int(time.time())
TOKENIZE_CHARS = 2_000_000  # the longest text /tokenize takes (the body limit allows ~12 MB)


def openai_base():
    """The fields completions and chat requests share (OpenAI's sampling settings), each read by
    `openai_settings`; each endpoint's schema adds its own."""

    class OpenAIRequest(strict_base()):
        model: str | None = None
        temperature: float | None = 1.0
        top_p: float | None = 1.0
        n: int = 1
        stop: free_text(256) | list[free_text(256)] | None = None
        seed: int | None = None
        stream: bool = False
        presence_penalty: float | None = 0.0
        frequency_penalty: float | None = 0.0
        response_format: dict[str, Any] | None = None
        stream_options: dict[str, Any] | None = None

    return OpenAIRequest


def completion_request(limits):
    from typing import Annotated

    from pydantic import Field

    text = free_text(limits.max_prompt_chars)

    class CompletionRequest(openai_base()):
        prompt: text | Annotated[list[text], Field(min_length=1, max_length=64)] = ""
        max_tokens: int | None = 16
        echo: bool = False
        logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
        best_of: int | None = None
        user: str | None = Field(None, max_length=256)
        suffix: Literal[None] = None

    return CompletionRequest


def openai_settings(request, limits, **fields) -> dict[str, Any]:
    """SampleConfig's fields from an OpenAI request (completions or chat), checked as /v1/generate's."""
    if getattr(request, "best_of", None) not in (None, request.n):
        raise unprocessable("best_of", "best_of must equal n")
    stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    settings = {
        **{f: getattr(SampleConfig, f) for f in SampleConfig.__dataclass_fields__ if f != "stop"},
        "max_new_tokens": 16 if request.max_tokens is None else request.max_tokens,
        "temperature": 1.0 if request.temperature is None else request.temperature,
        "top_p": 1.0 if request.top_p is None else request.top_p,
        "presence_penalty": request.presence_penalty or 0.0,
        "frequency_penalty": request.frequency_penalty or 0.0,
        "num_samples": request.n,
        "stop": stops,
        "seed": request.seed,
        **response_format(request.response_format),
        **fields,
    }
    return checked_settings(settings, limits)


def response_format(value: dict[str, Any] | None) -> dict[str, str]:
    """OpenAI's response_format as SampleConfig's regex / json_schema."""
    kind = (value or {}).get("type", "text")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"json_schema": json.dumps({"type": "object"})}
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        schema = value["json_schema"].get("schema")
        if isinstance(schema, dict):
            return {"json_schema": json.dumps(schema)}
    if kind == "regex" and isinstance(value.get("regex"), str):
        return {"regex": value["regex"]}
    raise unprocessable(
        "response_format", 'one of {"type": "text" | "json_object"}, {"type": "json_schema", "json_schema": '
        '{"schema": {...}}} or {"type": "regex", "regex": "..."}',
    )  # fmt: skip


def finish_reason(reason: str) -> str:
    """OpenAI's finish_reason: "stop" (a stop string, the end of text, a completed pattern), else "length"."""
    return "stop" if reason == "stop" else "length"


def reply_body(ident: str, kind: str, name: str, choices: list[dict], prompt_tokens: int, used: int) -> dict:
    """A whole (not streamed) completion or chat completion: OpenAI's envelope around the choices."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": used, "total_tokens": prompt_tokens + used}
    return {"id": ident, "object": kind, "created": int(time.time()), "model": name, "choices": choices, "usage": usage}


def legacy_logprobs(model: TextModel, records: list[dict], start: int) -> dict[str, list]:
    """Token records ({"id", "logprob", "top"}) in OpenAI's legacy completions format, offsets from
    `start` characters into prompt + completion."""
    out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = start
    for record in records:
        text = model.tokenizer.decode([record["id"]])
        out["tokens"].append(text)
        out["token_logprobs"].append(record["logprob"])
        top = record["top"]
        out["top_logprobs"].append(None if top is None else {model.tokenizer.decode([i]): v for i, v in top})
        out["text_offset"].append(offset)
        offset += len(text)
    return out


def add_openai_routes(app, service) -> None:
    CompletionRequest = completion_request(service.limits)  # noqa: N806 -- a class
    add_tokenizer_routes(app, service)

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
        if not prompts:
            raise unprocessable("prompt", "one to 64 prompts")
        settings = openai_settings(request, service.limits, logprobs=request.logprobs)
        for prompt in prompts:
            conditions(model, SimpleNamespace(prompt=prompt))
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        if request.stream:
            return await _stream(service, model, name, prompts, settings, request, ident)
        choices, used = [], 0
        for prompt in prompts:
            for choice, tokens in await _complete(service, model, name, prompt, settings, request):
                choices.append({**choice, "index": len(choices)})
                used += tokens
        prompt_tokens = sum(len(model.tokenizer.encode(p)) for p in prompts)
        return reply_body(ident, "text_completion", name, choices, prompt_tokens, used)


async def _complete(service, model: TextModel, name: str, prompt: str, settings: dict, request) -> list:
    """One prompt's choices (and each one's token count): the prompt scored for echo + logprobs,
    then the samples, which max_tokens 0 skips."""
    echoed = []
    if request.echo and request.logprobs is not None and prompt:
        echoed = await service.run(service.admit(), model.prompt_logprobs, prompt, request.logprobs)
    if settings["max_new_tokens"] == 0:
        samples, done, scored = [prompt] * request.n, Done(["length"] * request.n, [0] * request.n), None
    else:
        samples, done, scored = await service.samples(model, name, prompt, settings)
    out = []
    for i, (sample, reason, tokens) in enumerate(zip(samples, done.reasons, done.tokens, strict=True)):
        choice = {"text": sample if request.echo else sample[len(prompt) :], "logprobs": None}
        if request.logprobs is not None:
            records = echoed + (scored[i] if scored else [])
            choice["logprobs"] = legacy_logprobs(model, records, 0 if request.echo else len(prompt))
        out.append(({**choice, "finish_reason": finish_reason(reason)}, tokens))
    return out


async def _stream(service, model: TextModel, name: str, prompts: list[str], settings: dict, request, ident: str):
    from sse_starlette import EventSourceResponse

    if len(prompts) != 1 or request.n != 1:
        raise unprocessable("stream", "streaming sends one completion: one prompt and n = 1")
    if request.echo and request.logprobs is not None:
        raise unprocessable("stream", "echo with logprobs is not streamed: ask without stream")
    events = await service.events(model, name, prompts[0], settings)
    return EventSourceResponse(_chunks(events, ident, name, prompts[0], request, model), sep="\n", ping=15)


async def _chunks(events, ident: str, name: str, prompt: str, request, model: TextModel):
    """The engine's events as OpenAI completion chunks, ending with finish_reason and [DONE]."""
    offset = len(prompt)

    def chunk(piece: str, finish: str | None, logprobs=None) -> dict[str, str]:
        choice = {"text": piece, "index": 0, "logprobs": logprobs, "finish_reason": finish}
        body = {"id": ident, "object": "text_completion", "created": int(time.time()), "model": name}
        return {"data": json.dumps({**body, "choices": [choice]})}

    if request.echo and prompt:
        yield chunk(prompt, None)
    async for event in events:
        if isinstance(event, Text):
            logprobs = None
            if request.logprobs is not None and event.logprobs:
                logprobs = legacy_logprobs(model, event.logprobs[0], offset)
                offset += sum(len(t) for t in logprobs["tokens"])
            if event.pieces[0] or logprobs:
                yield chunk(event.pieces[0], None, logprobs)
        elif isinstance(event, Failed):
            yield {"data": json.dumps({"error": {"message": event.message, "type": "server_error"}})}
            return
        else:
            yield chunk("", finish_reason(event.reasons[0]))
    yield {"data": "[DONE]"}


def add_tokenizer_routes(app, service) -> None:
    """vLLM's tokenizer endpoints, which evaluation harnesses read (lm-evaluation-harness's remote
    tokenizer): the model's own tokens, so their context lengths and ours agree.

        GET  /tokenizer_info   {"eos_token": the start a text is scored from, ...}
        POST /tokenize         {"prompt", "model"} -> {"tokens": [ids], "count"}
        POST /detokenize       {"tokens": [ids], "model"} -> {"prompt": text}"""
    from typing import Annotated

    from fastapi import HTTPException
    from pydantic import Field

    class TokenizeRequest(strict_base()):  # whole documents: a harness cuts them into windows itself
        prompt: free_text(TOKENIZE_CHARS)
        model: str | None = None
        add_special_tokens: bool = False

    class DetokenizeRequest(strict_base()):
        tokens: Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=TOKENIZE_CHARS)]
        model: str | None = None

    @app.get("/tokenizer_info")
    def tokenizer_info(model: str | None = None) -> dict[str, Any]:
        chosen = service.pick(model)
        start = chosen.tokenizer.decode(chosen._prompt("").ids)  # what an empty prompt is scored after
        return {"eos_token": start, "bos_token": None, "pad_token": None, "vocab_size": chosen.tokenizer.vocab_size,
                "level": chosen.tokenizer.level, "chat_template": None}  # fmt: skip

    @app.post("/tokenize")
    def tokenize(request: TokenizeRequest) -> dict[str, Any]:
        chosen = service.pick(request.model)
        try:
            tokens = chosen.tokenizer.encode(request.prompt).tolist()
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        return {"tokens": tokens, "count": len(tokens), "max_model_len": None}

    @app.post("/detokenize")
    def detokenize(request: DetokenizeRequest) -> dict[str, str]:
        chosen = service.pick(request.model)
        if any(t >= chosen.tokenizer.vocab_size for t in request.tokens):
            raise unprocessable("tokens", f"token ids must be below the vocabulary's {chosen.tokenizer.vocab_size}")
        return {"prompt": chosen.tokenizer.decode(request.tokens)}


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
