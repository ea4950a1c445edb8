"""HTTP adapter over the API: FastAPI app with JSON and Server-Sent-Events generation.

(No `from __future__ import annotations`: FastAPI reads the handlers' annotations as classes.)

    gentext serve runs/book runs/markov --host 127.0.0.1 --port 8000

    POST /v1/generate     {"prompt", "model", "stream", and every SampleConfig field} -> JSON, or SSE
                          with "stream": true; "label" for a labelled run, "source" for a seq2seq run
    POST /v1/completions  the OpenAI completions API on the same engine (server/openai.py)
    POST /v1/chat/completions  OpenAI's chat API: messages as a transcript the run continues (server/chat.py)
    POST /v1/score        {"text", "model", "label", "unknown"} -> log-probability, loss, perplexity, bpc
    POST /v1/caption      {"image": base64 PNG/JPEG or a data: URL, "model", sampling fields} -> captions
    POST /v1/attention    {"source", "model"} -> a seq2seq translation and its attention matrix
    GET  /v1/models       the loaded runs (native fields, and OpenAI's "data" list)
    GET  /healthz         liveness;  GET /metrics  Prometheus;  GET /  the playground;  /docs  OpenAPI

Models load once at start. Every request is checked at the edge (server/requests.py: 4xx naming
the field, before any work is queued), then admitted or refused at once (503) by the gate:
`max_concurrency` requests in progress and `max_queue` waiting. Every generation (samples, beams,
captions, completions) joins its model's engine (inference/engine.py: one continuous batch of
`max_batch_rows` rows a step); scoring and attention run on one of `worker_threads` threads.
Each admitted request holds a `Slot` released exactly once on every path (server/streams.py).
SIGTERM: uvicorn stops accepting and gives in-flight requests `request_timeout` seconds to finish.
"""

import functools
import logging
import time
from pathlib import Path
from typing import Any

from gentext.errors import GentextError
from gentext.inference.engine import Engine
from gentext.inference.events import Done, Failed, Text
from gentext.inference.results import readable
from gentext.inference.textmodel import TextModel
from gentext.server.ops import Metrics, add_operations
from gentext.server.requests import (
    conditions,
    picture,
    request_models,
    sample_settings,
    unprocessable,
)
from gentext.server.streams import Gate, Slot, request_events
from gentext.useconfig import ServerLimits

__all__ = ["ServerLimits", "create_app"]
logger = logging.getLogger(__name__)


class Service:
    """The loaded models behind the limits: what the routes call."""

    def __init__(self, models: dict[str, TextModel], limits: ServerLimits, batching: bool):
        self.models, self.limits = models, limits
        self.gate = Gate(limits.worker_threads, limits.max_concurrency + limits.max_queue)
        self.default = next(iter(models))
        self.metrics = Metrics()
        self.metrics.in_flight.set_function(lambda: self.gate.count)  # read at each scrape
        # one engine per model; without batching a batch of one row: each request runs alone, in turn
        rows = limits.max_batch_rows if batching else 1
        self.engines = {id(m): Engine(m, rows) for m in models.values()}

    def pick(self, name: str | None) -> TextModel:
        if name is not None and name not in self.models:
            raise unprocessable("model", f"unknown model {name!r}; loaded: {', '.join(self.models)}")
        return self.models[name or self.default]

    def admit(self) -> Slot:
        from fastapi import HTTPException

        slot = self.gate.enter()
        if slot is None:
            raise HTTPException(503, detail="server busy: too many requests in flight; retry later")
        return slot

    async def run(self, slot: Slot, fn, *args, **kwargs):
        """`fn` on a worker thread once a thread slot is free (scoring, attention); GentextError -> 400."""
        from fastapi import HTTPException
        from starlette.concurrency import run_in_threadpool

        def limited():
            with self.gate.running:  # in the worker thread: waits for a thread slot
                return fn(*args, **kwargs)

        try:
            return await run_in_threadpool(limited)
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        finally:
            slot.release()

    async def events(self, model: TextModel, name: str, prompt: str, settings: dict[str, Any]):
        """A request's typed events from the model's engine (server/streams.py), counted in the
        metrics; bad input raises here (400), before anything is queued."""
        start, config = await self._checked(model, prompt, settings)
        slot = self.admit()
        began = time.perf_counter()

        def first() -> None:
            self.metrics.first_token.observe(time.perf_counter() - began)

        async def counted():
            async for event in request_events(
                self.engines[id(model)], start, config, slot, self.limits.stream_interval, first
            ):
                if isinstance(event, Done) and sum(event.tokens):
                    tokens = sum(event.tokens)
                    self.metrics.tokens.labels(name).inc(tokens)
                    self.metrics.per_token.observe((time.perf_counter() - began) / max(tokens / len(event.tokens), 1))
                yield event

        return counted()

    @staticmethod
    async def _checked(model: TextModel, prompt: str, settings: dict[str, Any]):
        """The request's Prompt and settings; a pattern to constrain to is compiled on a worker
        thread (a large JSON schema takes a while), never on the event loop's."""
        from fastapi import HTTPException
        from starlette.concurrency import run_in_threadpool

        try:
            if settings.get("regex") or settings.get("json_schema"):
                return await run_in_threadpool(functools.partial(model.request, prompt, **settings))
            return model.request(prompt, **settings)
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None

    async def samples(self, model: TextModel, name: str, prompt: str, settings: dict[str, Any]):
        """A JSON request's samples (the prompt, then each sample's text), its Done event and, when
        it asked for log-probabilities, each sample's token records."""
        from fastapi import HTTPException

        pieces, scored, done = None, None, None
        async for event in await self.events(model, name, prompt, settings):
            if isinstance(event, Text):
                pieces = [[] for _ in event.pieces] if pieces is None else pieces
                scored = [[] for _ in event.pieces] if scored is None else scored
                for sample, piece in zip(pieces, event.pieces, strict=True):
                    sample.append(piece)
                for records, new in zip(scored, event.logprobs, strict=False):
                    records.extend(new)
            elif isinstance(event, Failed):
                raise HTTPException(event.status, detail=event.message)
            else:
                done = event
        texts = [prompt + "".join(sample) for sample in pieces or [[] for _ in done.reasons]]
        return texts, done, scored


def create_app(
    models: dict[str, TextModel],
    limits: ServerLimits | None = None,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    batching: bool = True,
):
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse, Response

    from gentext.server.chat import add_chat_route
    from gentext.server.openai import add_openai_routes

    service = Service(models, limits or ServerLimits(), batching)
    GenerateRequest, ScoreRequest, CaptionRequest, AttentionRequest = request_models(service.limits)  # noqa: N806
    app = FastAPI(title="gentext", description="Generate text with recurrent language models and Transformers.")
    app.state.service = service
    add_operations(app, service.metrics, api_key, cors_origins or [])

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(models), "auth": bool(api_key)}

    @app.get("/metrics")
    def metrics() -> Response:
        for name, model in models.items():
            engine = service.engines[id(model)]
            service.metrics.batch_rows.labels(name).set(engine.rows_last_step)
            service.metrics.most_rows.labels(name).set(engine.most_rows)
        body, media_type = service.metrics.render()
        return Response(body, media_type=media_type)

    _add_text_routes(app, service, GenerateRequest, ScoreRequest)
    _add_condition_routes(app, service, CaptionRequest, AttentionRequest)
    add_openai_routes(app, service)
    add_chat_route(app, service)

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        return (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

    return app


def _add_text_routes(app, service: Service, generate_request, score_request) -> None:
    """POST /v1/generate (JSON or SSE) and POST /v1/score."""
    from sse_starlette import EventSourceResponse

    @app.post("/v1/generate")
    async def generate(request: generate_request):
        model = service.pick(request.model)
        name = request.model or service.default
        settings = sample_settings(request, service.limits)
        settings.update(conditions(model, request))  # bad input: 400 before any work
        if request.stream and request.num_samples != 1:
            raise unprocessable("num_samples", "streaming sends one sample")
        if request.stream:
            events = await service.events(model, name, request.prompt, settings)
            return EventSourceResponse(_sse(events, request.prompt), sep="\n", ping=15)
        samples, done, scored = await service.samples(model, name, request.prompt, settings)
        return _generated(model, name, request.prompt, samples, done, scored)

    @app.post("/v1/score")
    async def score(request: score_request):
        model = service.pick(request.model)
        conditions(model, request)  # an unknown label: 400 (the text's characters: model.score, as --unknown says)
        slot = service.admit()
        result = await service.run(slot, model.score, request.text, request.unknown, request.label)
        result.pop("per_token")
        return result


def _add_condition_routes(app, service: Service, caption_request, attention_request) -> None:
    """POST /v1/caption (a picture) and POST /v1/attention (a seq2seq run's attention matrix)."""

    @app.post("/v1/caption")
    async def caption(request: caption_request):
        from fastapi import HTTPException
        from starlette.concurrency import run_in_threadpool

        model = service.pick(request.model)
        settings = sample_settings(request, service.limits)
        if not model.captions:
            raise HTTPException(400, detail="this model does not caption pictures (train one with --condition image)")
        image = await run_in_threadpool(picture, request.image)  # decoding is CPU work: off the event loop
        name = request.model or service.default
        texts, _, _ = await service.samples(model, name, "", {**settings, "image": image})  # batched like any text
        return {"model": name, "captions": [t.strip() for t in texts]}

    @app.post("/v1/attention")
    async def attention(request: attention_request):
        from fastapi import HTTPException

        from gentext.inference.translation import attention_matrix

        model = service.pick(request.model)
        if not model.pairs:
            raise HTTPException(400, detail="only a seq2seq model has attention over a source")
        conditions(model, request)  # an empty source: 400
        slot = service.admit()
        return await service.run(slot, attention_matrix, model, request.source)


async def _sse(events, prompt: str):
    """gentext's own stream: `token` events with the text (the prompt first), then `done` or `error`."""
    from gentext.server.streams import sse_event

    count = 1
    yield sse_event("token", {"text": prompt})
    async for event in events:
        if isinstance(event, Text):
            if event.pieces[0]:
                count += 1
                yield sse_event("token", {"text": event.pieces[0]})
        elif isinstance(event, Done):
            yield sse_event("done", {"pieces": count})
        else:
            yield sse_event("error", {"detail": event.message})


def _generated(model: TextModel, name: str, prompt: str, samples: list[str], done: Done, scored) -> dict[str, Any]:
    out = {
        "model": name,
        "samples": samples,
        "prompt_tokens": len(model.tokenizer.encode(prompt)) if prompt else 0,
        "completion_tokens": done.tokens,
        "finish_reasons": done.reasons,
    }
    if scored is not None and any(scored):  # "logprobs": N asked: each token, its value, its alternatives
        out["logprobs"] = [readable(records, model.tokenizer) for records in scored]
    return out
