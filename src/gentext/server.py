"""HTTP adapter over the API: FastAPI app with JSON and Server-Sent-Events generation.

(No `from __future__ import annotations` here: FastAPI reads the request models from the
annotations of handlers defined inside `create_app`, which must be real classes, not strings.)

    gentext serve runs/book runs/markov --host 127.0.0.1 --port 8000

    POST /v1/generate   {"prompt", "max_new_tokens", "temperature", "top_k", "top_p", "num_samples",
                         "seed", "stop", "model", "stream"} -> JSON, or SSE with "stream": true
    POST /v1/score      {"text", "model"} -> log-probability, loss, perplexity, bpc
    GET  /v1/models     the loaded runs
    GET  /healthz       liveness
    GET  /              the playground page;  /docs  the OpenAPI page

Models load once at start. Generation runs in worker threads, never on the event loop; at most
`max_concurrency` run at once and `max_queue` wait, anything beyond gets 503 at once.
"""

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GentextError
from .textmodel import TextModel


@dataclass
class ServerLimits:
    max_prompt_chars: int = 4000
    max_new_tokens: int = 1000
    max_num_samples: int = 16
    max_concurrency: int = 2
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


def create_app(models: dict[str, TextModel], limits: ServerLimits | None = None):
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, StreamingResponse
    from pydantic import BaseModel, Field
    from starlette.concurrency import run_in_threadpool

    limits = limits or ServerLimits()
    gate = _Gate(limits)
    default_model = next(iter(models))

    class GenerateRequest(BaseModel):
        prompt: str = Field("", max_length=limits.max_prompt_chars)
        max_new_tokens: int = Field(200, ge=0, le=limits.max_new_tokens)
        temperature: float = Field(0.8, ge=0.0, le=100.0)
        top_k: int = Field(0, ge=0)
        top_p: float = Field(1.0, gt=0.0, le=1.0)
        min_p: float = Field(0.0, ge=0.0, lt=1.0)
        repetition_penalty: float = Field(1.0, gt=0.0, le=10.0)
        num_samples: int = Field(1, ge=1, le=limits.max_num_samples)
        seed: int | None = None
        stop: list[str] = Field(default_factory=list, max_length=8)
        model: str | None = None
        stream: bool = False

    class ScoreRequest(BaseModel):
        text: str = Field(..., min_length=1, max_length=limits.max_prompt_chars * 4)
        model: str | None = None

    app = FastAPI(title="gentext", description="Generate text with recurrent language models.")

    def pick(name: str | None) -> TextModel:
        if name is not None and name not in models:
            known = ", ".join(models)
            raise HTTPException(
                422, detail=[{"loc": ["body", "model"], "msg": f"unknown model {name!r}; loaded: {known}"}]
            )
        return models[name or default_model]

    def settings(request: GenerateRequest) -> dict[str, Any]:
        return dict(
            max_new_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_k=request.top_k,
            top_p=request.top_p,
            min_p=request.min_p,
            repetition_penalty=request.repetition_penalty,
            num_samples=request.num_samples,
            seed=request.seed,
            stop=request.stop,
            max_time=limits.request_timeout,
        )

    def admit() -> None:
        if not gate.enter():
            raise HTTPException(503, detail="server busy: too many requests in flight; retry later")

    def run_limited(fn, *args, **kwargs):
        with gate.running:  # in the worker thread: waits for a generation slot
            return fn(*args, **kwargs)

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {"status": "ok", "models": list(models)}

    @app.get("/v1/models")
    def list_models() -> dict[str, Any]:
        return {"models": [{"name": name, **_describe(model)} for name, model in models.items()]}

    @app.post("/v1/generate")
    async def generate(request: GenerateRequest):
        model = pick(request.model)
        try:
            model.check_prompt(request.prompt)  # unknown characters: 400 before any work
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        admit()
        if request.stream:
            if request.num_samples != 1:
                gate.leave()
                raise HTTPException(422, detail=[{"loc": ["body", "num_samples"], "msg": "streaming sends one sample"}])
            return StreamingResponse(
                _events(model, request.prompt, settings(request), gate), media_type="text/event-stream"
            )
        try:
            samples = await run_in_threadpool(run_limited, model.generate, request.prompt, **settings(request))
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        finally:
            gate.leave()
        return {
            "model": request.model or default_model,
            "samples": samples,
            "prompt_tokens": len(model.tokenizer.encode(request.prompt)) if request.prompt else 0,
            "completion_tokens": [len(model.tokenizer.encode(s[len(request.prompt) :])) for s in samples],
        }

    @app.post("/v1/score")
    async def score(request: ScoreRequest):
        model = pick(request.model)
        admit()
        try:
            result = await run_in_threadpool(run_limited, model.score, request.text)
        except GentextError as exc:
            raise HTTPException(400, detail=str(exc)) from None
        finally:
            gate.leave()
        result.pop("per_token")
        return result

    @app.get("/", response_class=HTMLResponse)
    def playground() -> str:
        return (Path(__file__).parent / "playground.html").read_text(encoding="utf-8")

    return app


def _events(model: TextModel, prompt: str, settings: dict[str, Any], gate: _Gate):
    """SSE: one `token` event per piece of text, then `done`. A client that disconnects stops the
    iteration, and with it the generation."""
    try:
        with gate.running:
            count = 0
            for piece in model.stream(prompt, **settings):
                if piece:
                    count += 1
                    yield f"event: token\ndata: {json.dumps({'text': piece})}\n\n"
            yield f"event: done\ndata: {json.dumps({'pieces': count})}\n\n"
    finally:
        gate.leave()


def _describe(model: TextModel) -> dict[str, Any]:
    info = model.info()
    return {"kind": info["model"]["kind"], "level": info["tokenizer"]["level"], "parameters": info["parameters"]}


def serve(runs: list[str], host: str, port: int, limits: ServerLimits) -> None:
    """Load every run once, then serve until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise GentextError("gentext serve needs FastAPI and uvicorn: pip install 'gentext[serve]'") from None
    from .api import load

    models = {Path(run).name or run: load(run) for run in runs}
    uvicorn.run(create_app(models, limits), host=host, port=port, log_level="info")
