"""HTTP adapter over the API: FastAPI app with JSON and Server-Sent-Events generation.

(No `from __future__ import annotations` here: FastAPI reads the request models from the
annotations of handlers defined inside `create_app`, which must be real classes, not strings.)

    gentext serve runs/book runs/markov --host 127.0.0.1 --port 8000

    POST /v1/generate   {"prompt", "model", "stream", and every SampleConfig field: "max_new_tokens",
                         "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                         "no_repeat_ngram_size", "stop", "max_time", "num_beams", "length_penalty",
                         "allow_unk", "num_samples", "seed"} -> JSON, or SSE with "stream": true
    POST /v1/score      {"text", "model"} -> log-probability, loss, perplexity, bpc
    GET  /v1/models     the loaded runs
    GET  /healthz       liveness
    GET  /              the playground page;  /docs  the OpenAPI page

Models load once at start. Generation runs in worker threads, never on the event loop, each
generation on one thread from start to end; at most `max_concurrency` run at once and `max_queue`
wait, anything beyond gets 503 at once. Request fields are SampleConfig's, checked by the same
rules as the CLI's flags (422 with the CLI's message); unknown fields are a 422 too.

With an API key (`--api-key` or GENTEXT_API_KEY) every endpoint but /healthz and the static
playground page needs `Authorization: Bearer KEY` (401 otherwise). CORS is off unless
`--cors-origin` names origins.
"""

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import threading
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentext.config import SampleConfig
from gentext.errors import GentextError
from gentext.inference.batching import BatchEngine, supports
from gentext.inference.textmodel import TextModel

logger = logging.getLogger(__name__)
OPEN_PATHS = {"/healthz", "/"}  # the playground page is static: it asks for the key itself


@dataclass
class ServerLimits:
    max_prompt_chars: int = 4000
    max_new_tokens: int = 1000
    max_num_samples: int = 16
    max_concurrency: int = 2  # rows of the batch (continuous batching), or generations at once
    max_queue: int = 8
    request_timeout: float = 60.0  # seconds of generation per request


class _Gate:
    """Counts requests in flight; refuses at once when the queue is full."""

    def __init__(self, limits: ServerLimits):
        self.limit = limits.max_concurrency + limits.max_queue
        self.running = threading.BoundedSemaphore(limits.max_concurrency)
        self.lock = threading.Lock()
        self.count = 0

    def enter(self) -> bool:
        with self.lock:
            if self.count >= self.limit:
                return False
            self.count += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.count -= 1


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _sample_request_fields(limits: ServerLimits | None = None) -> dict[str, Any]:
    """The request's sampling fields, derived from SampleConfig: same names, same defaults (the
    token budget capped by the server's limit); the ranges are checked by SampleConfig.validate,
    so the server and the CLI refuse alike."""
    hints = typing.get_type_hints(SampleConfig)
    fields = {}
    for f in dataclasses.fields(SampleConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        fields[f.name] = (hints[f.name], default)
    if limits is not None:
        fields["max_new_tokens"] = (int, min(SampleConfig.max_new_tokens, limits.max_new_tokens))
    return fields


def _unprocessable(field: str, message: str):
    from fastapi import HTTPException

    return HTTPException(422, detail=[{"loc": ["body", field], "msg": message}])


def sample_settings(request, limits: ServerLimits) -> dict[str, Any]:
    """The request's SampleConfig fields, validated by the CLI's rules plus the server's limits."""
    settings = request.model_dump(include=set(_sample_request_fields()))
    for name, cap in (("max_new_tokens", limits.max_new_tokens), ("num_samples", limits.max_num_samples)):
        if settings[name] > cap:
            raise _unprocessable(name, f"{_flag(name)} must be <= {cap} on this server, got {settings[name]}")
    if len(settings["stop"]) > 8:
        raise _unprocessable("stop", "at most 8 stop strings")
    try:
        SampleConfig(**settings).validate()
    except GentextError as exc:
        field = next((n for n in settings if _flag(n) in str(exc)), "body")
        raise _unprocessable(field, str(exc)) from None
    timeout = limits.request_timeout
    settings["max_time"] = timeout if settings["max_time"] is None else min(settings["max_time"], timeout)
    return settings


def _add_security(app, api_key: str | None, cors_origins: list[str]) -> None:
    """Bearer-key authentication (compared in constant time) and opt-in CORS."""
    from fastapi.responses import JSONResponse

    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    if not api_key:
        return
    expected = f"Bearer {api_key}".encode()

    @app.middleware("http")
    async def require_key(request, call_next):
        if request.url.path in OPEN_PATHS or request.method == "OPTIONS":
            return await call_next(request)
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            return JSONResponse(
                {"detail": "missing or wrong API key: send Authorization: Bearer KEY"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)


def _request_models(limits: ServerLimits):
    """The request schemas: generation from SampleConfig's fields, scoring; unknown fields refused."""
    from pydantic import BaseModel, ConfigDict, Field, create_model

    strict = ConfigDict(extra="forbid")  # a misspelled field is a 422 naming it, never ignored
    generate = create_model(
        "GenerateRequest",
        __config__=strict,
        prompt=(str, Field("", max_length=limits.max_prompt_chars)),
        model=(str | None, None),
        stream=(bool, False),
        **_sample_request_fields(limits),
    )

    class ScoreRequest(BaseModel):
        model_config = strict
        text: str = Field(..., min_length=1, max_length=limits.max_prompt_chars * 4)
        model: str | None = None

    return generate, ScoreRequest


class _Service:
    """The loaded models behind the limits: what the routes call."""

    def __init__(self, models: dict[str, TextModel], limits: ServerLimits, batching: bool):
        self.models, self.limits, self.gate = models, limits, _Gate(limits)
        self.default = next(iter(models))
        # continuous batching: one engine per model, its batch holding up to max_concurrency rows
        self.engines = {id(m): BatchEngine(m, limits.max_concurrency) for m in models.values()} if batching else {}

    def engine(self, model: TextModel, settings: dict[str, Any]) -> BatchEngine | None:
        """The model's batch, if this request can join it (else: a thread of its own)."""
        engine, config = self.engines.get(id(model)), SampleConfig(**settings)
        fits = engine is not None and config.num_samples <= engine.max_rows
        return engine if fits and supports(model, config) else None

    def pick(self, name: str | None) -> TextModel:
        if name is not None and name not in self.models:
            raise _unprocessable("model", f"unknown model {name!r}; loaded: {', '.join(self.models)}")
        return self.models[name or self.default]

    def admit(self) -> None:
        from fastapi import HTTPException

        if not self.gate.enter():
            raise HTTPException(503, detail="server busy: too many requests in flight; retry later")

    async def run(self, fn, *args, **kwargs):
        """`fn` on a worker thread once a generation slot is free; GentextError -> 400."""
        from fastapi import HTTPException
        from starlette.concurrency import run_in_threadpool

        def limited():
            with self.gate.running:  # in the worker thread: waits for a generation slot
                return fn(*args, **kwargs)

        try:
            return await run_in_threadpool(limited)
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        finally:
            self.gate.leave()


def create_app(
    models: dict[str, TextModel],
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    batching: bool = True,
):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, StreamingResponse

    service = _Service(models, limits or ServerLimits(), batching)
    GenerateRequest, ScoreRequest = _request_models(service.limits)  # noqa: N806 -- classes
    app = FastAPI(title="gentext", description="Generate text with recurrent language models.")
    _add_security(app, api_key, cors_origins or [])

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "auth": bool(api_key)}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"models": [{"name": name, **_describe(model)} for name, model in models.items()]}

    @app.post("/v1/generate")
    async def generate(request: GenerateRequest):
        model = service.pick(request.model)
        settings = sample_settings(request, service.limits)
        try:
            model.check_prompt(request.prompt)  # unknown characters: 400 before any work
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        if request.stream and request.num_samples != 1:
            raise _unprocessable("num_samples", "streaming sends one sample")
        service.admit()
        engine = service.engine(model, settings)
        if request.stream:
            start = _thread_source if engine is None else _batched_source(engine)
            events = _events(start(model, request.prompt, settings, service.gate))
            return StreamingResponse(events, media_type="text/event-stream")
        if engine is None:
            samples = await service.run(model.generate, request.prompt, **settings)
        else:
            samples = await _batched_samples(engine, model, request.prompt, settings, service.gate)
        return {
            "model": request.model or service.default,
            "samples": samples,
            "prompt_tokens": len(model.tokenizer.encode(request.prompt)) if request.prompt else 0,
            "completion_tokens": [len(model.tokenizer.encode(s[len(request.prompt) :])) for s in samples],
        }

    @app.post("/v1/score")
    async def score(request: ScoreRequest):
        model = service.pick(request.model)
        service.admit()
        result = await service.run(model.score, request.text)
        result.pop("per_token")
        return result

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        return (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

    return app


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _thread_source(model: TextModel, prompt: str, settings: dict[str, Any], gate: _Gate):
    """The generation on one worker thread of its own, start to end (torch's grad mode is per
    thread, so a generator must not hop between threads), once a generation slot is free."""

    def start(send, cancelled: threading.Event) -> None:
        def work() -> None:
            try:
                with gate.running:
                    for piece in model.stream(prompt, **settings):
                        if cancelled.is_set():
                            return
                        send("text", piece)
                send("done", None)
            except Exception as exc:  # noqa: BLE001 -- reported to the client as an error event
                logger.exception("generation failed")
                send("error", str(exc) if isinstance(exc, GentextError) else f"internal error: {type(exc).__name__}")
            finally:
                gate.leave()

        asyncio.get_running_loop().run_in_executor(None, work)

    return start


def _batched_source(engine: BatchEngine):
    """The generation as rows of the model's batch (one sample: the streamed one)."""

    def source(model: TextModel, prompt: str, settings: dict[str, Any], gate: _Gate):
        def start(send, cancelled: threading.Event) -> None:
            def emit(kind: str, value: Any) -> None:
                send(kind, value[0] if kind == "text" else value)
                if kind != "text":
                    gate.leave()

            ids, config = model.request(prompt, **settings)
            send("text", prompt)  # as `TextModel.stream` does: the prompt, then what follows
            job = engine.submit(ids, config, emit)
            job.cancelled = cancelled  # a client that goes away leaves the batch at the next step

        return start

    return source


async def _batched_samples(engine: BatchEngine, model: TextModel, prompt: str, settings, gate: _Gate) -> list[str]:
    """Every sample of a JSON request, generated as rows of the model's batch."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    ids, config = model.request(prompt, **settings)
    texts = [[prompt] for _ in range(config.num_samples)]

    def finish(kind: str, value: Any) -> None:
        if not done.done():
            done.set_result((kind, value))

    def emit(kind: str, value: Any) -> None:  # on the engine's thread
        if kind == "text":
            for text, piece in zip(texts, value, strict=True):
                text.append(piece)
            return
        gate.leave()
        if not loop.is_closed():
            loop.call_soon_threadsafe(finish, kind, value)

    engine.submit(ids, config, emit)
    kind, value = await done
    if kind == "error":
        from fastapi import HTTPException

        raise HTTPException(500, detail=value)
    return ["".join(text) for text in texts]


class _Mailbox:
    """Hands items from worker threads to an event loop's queues with at most one wake-up of the
    loop pending: a batch step that produces 64 pieces wakes the loop once, not 64 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop, self.lock, self.items, self.scheduled = loop, threading.Lock(), [], False

    def post(self, queue: asyncio.Queue, item: Any) -> None:
        with self.lock:
            self.items.append((queue, item))
            if self.scheduled:
                return
            self.scheduled = True
        if not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self.lock:
            items, self.items, self.scheduled = self.items, [], False
        for queue, item in items:
            queue.put_nowait(item)


_MAILBOXES: dict[int, _Mailbox] = {}


def _mailbox(loop: asyncio.AbstractEventLoop) -> _Mailbox:
    return _MAILBOXES.setdefault(id(loop), _Mailbox(loop))


async def _events(start):
    """SSE: `token` events with the text produced, then `done` (or `error`). `start(send, cancelled)`
    sets the work going elsewhere; its `send(kind, value)` calls reach this coroutine through an
    asyncio queue. Text that piled up while the client was being served goes out as one event. A
    client that disconnects cancels the coroutine, which sets `cancelled`."""
    queue: asyncio.Queue = asyncio.Queue()
    mailbox = _mailbox(asyncio.get_running_loop())
    cancelled = threading.Event()
    start(lambda kind, value: mailbox.post(queue, (kind, value)), cancelled)
    try:
        count = 0
        while True:
            items = [await queue.get()]
            while not queue.empty():
                items.append(queue.get_nowait())
            text = "".join(value for kind, value in items if kind == "text")
            if text:
                count += 1
                yield _sse("token", {"text": text})
            end = next(((kind, value) for kind, value in items if kind != "text"), None)  # always the last
            if end is not None:
                kind, value = end
                yield _sse("done", {"pieces": count}) if kind == "done" else _sse("error", {"detail": value})
                break
    finally:
        cancelled.set()  # the work ends by itself at its next piece or step


def _describe(model: TextModel) -> dict[str, Any]:
    info = model.info()
    return {"kind": info["model"]["kind"], "level": info["tokenizer"]["level"], "parameters": info["parameters"]}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    runs: list[str],
    host: str,
    port: int,
    limits: ServerLimits,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    batching: bool = True,
) -> None:
    """Load every run once, then serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise GentextError("gentext serve needs FastAPI and uvicorn: pip install 'gentext[serve]'") from None
    from gentext.api import load

    if not api_key and not _is_loopback(host):
        logger.warning("serving on %s without an API key: anyone who reaches it can use it (set --api-key)", host)
    models = {Path(run).name or run: load(run) for run in runs}
    app = create_app(models, limits, api_key=api_key, cors_origins=cors_origins, batching=batching)
    uvicorn.run(app, host=host, port=port, log_level="info")
