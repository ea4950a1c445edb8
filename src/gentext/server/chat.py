"""OpenAI's chat completions API, for every kind of run (inference/chat.py renders the messages).

    POST /v1/chat/completions  {"model", "messages", "max_tokens" | "max_completion_tokens",
                                "temperature", "top_p", "n", "stop", "seed", "stream", "logprobs",
                                "top_logprobs", "presence_penalty", "frequency_penalty",
                                "response_format", "label" (gentext: a labelled run's label)}

A language-model run continues the messages' transcript and stops at the next speaker's turn; a
seq2seq run answers the last user message with its translation; a captioner captions the picture
in the last user message (an `image_url` part with a data: URL). The settings pass the same checks
as /v1/completions and /v1/generate, on the same engine.
"""

import json
import time
import uuid
from types import SimpleNamespace
from typing import Literal

from gentext.inference.chat import transcript
from gentext.inference.events import Failed, Text
from gentext.inference.textmodel import TextModel
from gentext.server.openai import finish_reason, openai_base, openai_settings, reply_body
from gentext.server.requests import MAX_LABEL_CHARS, conditions, free_text, picture, strict_base, unprocessable
from gentext.useconfig import MAX_LOGPROBS


def chat_request(limits):
    from typing import Annotated

    from pydantic import Field

    strict, long_text = strict_base(), free_text(limits.max_prompt_chars)

    class Part(strict):
        type: Literal["text", "image_url"]
        text: long_text | None = None
        image_url: dict[str, str] | None = None

    class Message(strict):
        role: Literal["system", "developer", "user", "assistant"]
        content: long_text | Annotated[list[Part], Field(max_length=16)]
        name: free_text(64) | None = None

    class ChatRequest(openai_base()):
        messages: Annotated[list[Message], Field(min_length=1, max_length=256)]
        max_tokens: int | None = None
        max_completion_tokens: int | None = None
        logprobs: bool = False
        top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
        user: free_text(256) | None = None
        label: free_text(MAX_LABEL_CHARS) | None = None

    return ChatRequest


def add_chat_route(app, service) -> None:
    ChatRequest = chat_request(service.limits)  # noqa: N806 -- a class

    @app.post("/v1/chat/completions")
    async def chat(request: ChatRequest):
        from starlette.concurrency import run_in_threadpool

        model = service.pick(request.model)
        name = request.model or service.default
        messages = [{"role": m.role, "content": _text(m.content), "name": m.name} for m in request.messages]
        prompt, stop, extra = "", [], {}
        if model.captions:
            extra["image"] = await run_in_threadpool(picture, _last_image(request.messages))
        elif model.pairs:
            extra["source"] = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        else:
            prompt, stop = transcript(model, messages)
            if len(prompt) > service.limits.max_prompt_chars:
                raise unprocessable("messages", f"the transcript is {len(prompt):,} characters; at most "
                                                f"{service.limits.max_prompt_chars:,} on this server")  # fmt: skip
        if request.label is not None:
            extra["label"] = request.label
        conditions(model, SimpleNamespace(prompt=prompt, **{k: v for k, v in extra.items() if k != "image"}))
        settings = openai_settings(_shape(request, stop, service.limits), service.limits, **_logprobs(request), **extra)
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        if request.stream:
            from sse_starlette import EventSourceResponse

            if request.n != 1:
                raise unprocessable("stream", "streaming sends one reply: n = 1")
            events = await service.events(model, name, prompt, settings)
            return EventSourceResponse(_chunks(events, ident, name, request, model), sep="\n", ping=15)
        samples, done, scored = await service.samples(model, name, prompt, settings)
        choices = []
        for i, (sample, reason) in enumerate(zip(samples, done.reasons, strict=True)):
            message = {"role": "assistant", "content": _reply(sample[len(prompt) :])}
            logprobs = {"content": _content_logprobs(model, scored[i])} if request.logprobs and scored else None
            choices.append({"index": i, "message": message, "logprobs": logprobs})
            choices[-1]["finish_reason"] = finish_reason(reason)
        prompt_tokens = len(model.tokenizer.encode(prompt)) if prompt else 0
        return reply_body(ident, "chat.completion", name, choices, prompt_tokens, sum(done.tokens))


def _text(content) -> str:
    return content if isinstance(content, str) else "".join(part.text or "" for part in content if part.type == "text")


def _last_image(messages) -> str:
    for message in reversed(messages):
        for part in [] if isinstance(message.content, str) else reversed(message.content):
            if part.type == "image_url" and part.image_url and part.image_url.get("url"):
                return part.image_url["url"]
    raise unprocessable("messages", "a captioner needs a picture: an image_url part with a data: URL")


def _shape(request, stop: list[str], limits) -> SimpleNamespace:
    """The chat request as the fields openai_settings reads (its stop, else the template's)."""
    tokens = request.max_completion_tokens or request.max_tokens or min(200, limits.max_new_tokens)
    given = [request.stop] if isinstance(request.stop, str) else request.stop
    return SimpleNamespace(
        best_of=None, stop=given if given else stop, max_tokens=tokens, temperature=request.temperature,
        top_p=request.top_p, presence_penalty=request.presence_penalty, frequency_penalty=request.frequency_penalty,
        n=request.n, seed=request.seed, response_format=request.response_format,
    )  # fmt: skip


def _logprobs(request) -> dict[str, int | None]:
    return {"logprobs": (request.top_logprobs or 0) if request.logprobs else None}


def _reply(text: str) -> str:
    """The reply as the assistant's message: the space after the speaker's colon is not content."""
    return text[1:] if text.startswith(" ") else text


def _content_logprobs(model: TextModel, records: list[dict]) -> list[dict]:
    """Token records in the chat API's format: token, logprob, bytes, top_logprobs."""
    decode = model.tokenizer.decode

    def entry(token: int, value: float) -> dict:
        text = decode([token])
        return {"token": text, "logprob": value, "bytes": list(text.encode("utf-8"))}

    return [{**entry(r["id"], r["logprob"]), "top_logprobs": [entry(i, v) for i, v in r["top"]]} for r in records]


async def _chunks(events, ident: str, name: str, request, model: TextModel):
    """The engine's events as chat.completion.chunk events, ending with finish_reason and [DONE]."""
    first = True

    def chunk(delta: dict, finish: str | None = None, logprobs=None) -> dict[str, str]:
        body = {"id": ident, "object": "chat.completion.chunk", "created": int(time.time()), "model": name}
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}
        return {"data": json.dumps({**body, "choices": [choice]})}

    yield chunk({"role": "assistant", "content": ""})
    async for event in events:
        if isinstance(event, Text):
            piece = event.pieces[0]
            if first and piece:
                piece, first = _reply(piece), False
            logprobs = None
            if request.logprobs and event.logprobs:
                logprobs = {"content": _content_logprobs(model, event.logprobs[0])}
            if piece or logprobs:
                yield chunk({"content": piece}, None, logprobs)
        elif isinstance(event, Failed):
            yield {"data": json.dumps({"error": {"message": event.message, "type": "server_error"}})}
            return
        else:
            yield chunk({}, finish_reason(event.reasons[0]))
    yield {"data": "[DONE]"}
