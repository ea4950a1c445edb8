"""HTTP adapter over the API: FastAPI app with JSON and Server-Sent-Events generation.

(No `from __future__ import annotations` here: FastAPI reads the request models from the
annotations of handlers defined inside `create_app`, which must be real classes, not strings.)

    gentext serve runs/book runs/markov --host 127.0.0.1 --port 8000

    POST /v1/generate   {"prompt", "model", "stream", and every SampleConfig field: "max_new_tokens",
                         "temperature", "top_k", "top_p", "min_p", "repetition_penalty",
                         "no_repeat_ngram_size", "stop", "max_time", "num_beams", "length_penalty",
                         "allow_unk", "num_samples", "seed"} -> JSON, or SSE with "stream": true;
                         "label" for a labelled run, "source" for a seq2seq run
    POST /v1/score      {"text", "model", "label"} -> log-probability, loss, perplexity, bpc
    POST /v1/caption    {"image": base64 PNG/JPEG or a data: URL, "model", sampling fields} -> captions
    POST /v1/attention  {"source", "model"} -> a seq2seq translation and its attention matrix
    GET  /v1/models     the loaded runs (with their labels, and whether they need a source or a picture)
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

import dataclasses
import hmac
import ipaddress
import logging
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gentext.config import SampleConfig
from gentext.errors import GentextError
from gentext.inference.batching import BatchEngine, supports
from gentext.inference.textmodel import TextModel
from gentext.server.streams import Gate, batched_samples, batched_source, events, thread_source

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
        label=(str | None, Field(None, max_length=200)),  # a labelled run's label (--condition label)
        source=(str | None, Field(None, max_length=limits.max_prompt_chars)),  # a seq2seq run's source
        model=(str | None, None),
        stream=(bool, False),
        **_sample_request_fields(limits),
    )

    class ScoreRequest(BaseModel):
        model_config = strict
        text: str = Field(..., min_length=1, max_length=limits.max_prompt_chars * 4)
        label: str | None = Field(None, max_length=200)
        model: str | None = None

    caption = create_model(
        "CaptionRequest",
        __config__=strict,
        image=(str, Field(..., min_length=1, max_length=MAX_IMAGE_CHARS)),  # base64 or a data: URL
        model=(str | None, None),
        **_sample_request_fields(limits),
    )
    return generate, ScoreRequest, caption


class _Service:
    """The loaded models behind the limits: what the routes call."""

    def __init__(self, models: dict[str, TextModel], limits: ServerLimits, batching: bool):
        self.models, self.limits, self.gate = (
            models,
            limits,
            Gate(limits.max_concurrency, limits.max_concurrency + limits.max_queue),
        )
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
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, StreamingResponse

    service = _Service(models, limits or ServerLimits(), batching)
    GenerateRequest, ScoreRequest, CaptionRequest = _request_models(service.limits)  # noqa: N806 -- classes
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
        conditions = _conditions(model, request)  # bad input: 400 before any work
        if request.stream and request.num_samples != 1:
            raise _unprocessable("num_samples", "streaming sends one sample")
        service.admit()
        engine = service.engine(model, settings)
        settings.update(conditions)  # every path hands settings to generate/stream/request, which take them
        if request.stream:
            start = thread_source if engine is None else batched_source(engine)
            stream = events(start(model, request.prompt, settings, service.gate))
            return StreamingResponse(stream, media_type="text/event-stream")
        if engine is None:
            samples = await service.run(model.generate, request.prompt, **settings)
        else:
            samples = await batched_samples(engine, model, request.prompt, settings, service.gate)
        return _generated(model, request.model or service.default, request.prompt, samples)

    @app.post("/v1/score")
    async def score(request: ScoreRequest):
        model = service.pick(request.model)
        _conditions(model, request)
        service.admit()
        result = await service.run(model.score, request.text, "error", request.label)
        result.pop("per_token")
        return result

    _add_caption_route(app, service, CaptionRequest)

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        return (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

    return app


MAX_IMAGE_CHARS = 8_000_000  # a base64 picture up to ~6 MB


def _add_caption_route(app, service, request_model) -> None:
    """POST /v1/caption {"image": base64 PNG/JPEG or a data: URL, "model", sampling fields}, and
    POST /v1/attention {"source", "model"}: a seq2seq translation with its attention matrix."""
    from fastapi import HTTPException
    from pydantic import ConfigDict, Field, create_model

    from gentext.inference.translation import attention_matrix

    @app.post("/v1/caption")
    async def caption(request: request_model):
        model = service.pick(request.model)
        settings = sample_settings(request, service.limits)
        if not model.captions:
            raise HTTPException(400, detail="this model does not caption pictures (train one with --condition image)")
        picture = _picture(request.image)
        service.admit()
        captions = await service.run(model.caption, picture, **settings)
        return {"model": request.model or service.default, "captions": captions}

    attention_request = create_model(
        "AttentionRequest",
        __config__=ConfigDict(extra="forbid"),
        source=(str, Field(..., min_length=1, max_length=service.limits.max_prompt_chars)),
        model=(str | None, None),
    )

    @app.post("/v1/attention")
    async def attention(request: attention_request):
        model = service.pick(request.model)
        if not model.pairs:
            raise HTTPException(400, detail="only a seq2seq model has attention over a source")
        _conditions(model, request)  # an empty source: 400
        service.admit()
        return await service.run(attention_matrix, model, request.source)


def _picture(data: str):
    """A request's base64 picture (optionally a data: URL) as a PIL image; 400 if it is not one."""
    import base64
    import binascii
    import io

    from fastapi import HTTPException
    from PIL import Image, UnidentifiedImageError

    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        image = Image.open(io.BytesIO(base64.b64decode(payload, validate=True)))
        image.load()
    except (binascii.Error, ValueError, UnidentifiedImageError, OSError):
        raise HTTPException(400, detail="image: not a readable PNG or JPEG (send base64 or a data: URL)") from None
    return image


def _conditions(model: TextModel, request) -> dict[str, str]:
    """The request's label and source, checked with its prompt: unknown characters, an unknown or
    missing label, a missing source are a 400 naming the problem."""
    from fastapi import HTTPException

    given = {n: getattr(request, n, None) for n in ("label", "source")}
    conditions = {name: value for name, value in given.items() if value is not None}
    try:
        model.check_prompt(getattr(request, "prompt", ""), **conditions)
    except GentextError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    return conditions


def _generated(model: TextModel, name: str, prompt: str, samples: list[str]) -> dict[str, Any]:
    return {
        "model": name,
        "samples": samples,
        "prompt_tokens": len(model.tokenizer.encode(prompt)) if prompt else 0,
        "completion_tokens": [len(model.tokenizer.encode(s[len(prompt) :])) for s in samples],
    }


def _describe(model: TextModel) -> dict[str, Any]:
    info = model.info()
    return {
        "kind": info["model"]["kind"],
        "level": info["tokenizer"]["level"],
        "parameters": info["parameters"],
        "labels": model.labels,  # generation from a label: one of these in "label"
        "needs_source": model.pairs,  # a seq2seq run: "source" in every request
        "captions": model.captions,  # a captioner: POST /v1/caption with a picture
    }


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
    load: dict | None = None,
) -> None:
    """Load every run once (`load`: LoadConfig's device and weights), then serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise GentextError("gentext serve needs FastAPI and uvicorn: pip install 'gentext[serve]'") from None
    from gentext.api import load as load_run
    from gentext.checkpoint import run_names

    if not api_key and not _is_loopback(host):
        logger.warning("serving on %s without an API key: anyone who reaches it can use it (set --api-key)", host)
    models = {name: load_run(run, **(load or {})) for name, run in zip(run_names(runs), runs, strict=True)}
    app = create_app(models, limits, api_key=api_key, cors_origins=cors_origins, batching=batching)
    uvicorn.run(app, host=host, port=port, log_level="info")
