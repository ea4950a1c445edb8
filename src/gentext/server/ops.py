"""Operating the server: authentication and CORS, the body-size limit, Prometheus metrics and one
structured access-log line per request."""

import hmac
import ipaddress
import json
import logging
import time

from gentext.server.requests import MAX_BODY_BYTES

access_log = logging.getLogger("gentext.access")
OPEN_PATHS = {"/healthz", "/", "/metrics"}  # the playground page is static: it asks for the key itself


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (one per app: tests make many)."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gentext_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry
        )
        self.tokens = Counter("gentext_generated_tokens", "tokens generated", ["model"], registry=self.registry)
        self.in_flight = Gauge(
            "gentext_requests_in_flight", "requests admitted, running or queued", registry=self.registry
        )
        self.batch_rows = Gauge(
            "gentext_batch_rows", "rows in the last batched step", ["model"], registry=self.registry
        )
        self.most_rows = Gauge(
            "gentext_batch_rows_most", "the most rows one batched step has held", ["model"], registry=self.registry
        )
        self.first_token = Histogram(
            "gentext_time_to_first_token_seconds", "streamed requests: time to the first generated text",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5), registry=self.registry,
        )  # fmt: skip
        self.per_token = Histogram(
            "gentext_time_per_token_seconds", "JSON requests: generation time per token of a sample",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1), registry=self.registry,
        )  # fmt: skip

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def add_operations(app, metrics: Metrics, api_key: str | None, cors_origins: list[str]) -> None:
    """Middleware, outermost first: the body limit, the access log with metrics, then auth and CORS.

    All pure ASGI, none `@app.middleware("http")`: Starlette's BaseHTTPMiddleware relays every
    chunk of a streamed response through a memory stream and a task of its own, a cost paid per
    event that showed as a large share of the server's CPU under many streams (benchmarks/RESULTS.md)."""
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=cors_origins, allow_methods=["GET", "POST"], allow_headers=["*"]
        )
    if api_key:
        app.add_middleware(RequireKey, expected=f"Bearer {api_key}".encode())
    app.add_middleware(AccessLog, metrics=metrics)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    _refusals_in_ascii(app)


OPENAI_PATHS = ("/v1/completions", "/v1/chat/completions")


def _refusals_in_ascii(app) -> None:
    """Refusals as ASCII JSON: FastAPI's 422s echo the refused input, and input that is not valid
    Unicode (a lone surrogate) would fail to encode, turning the refusal into a 500. On OpenAI's
    routes the body also carries OpenAI's `error` object, which its clients show."""
    import json

    from fastapi.encoders import jsonable_encoder
    from fastapi.exceptions import HTTPException, RequestValidationError
    from fastapi.responses import Response

    def refusal(request, status: int, detail) -> Response:
        body = {"detail": detail}
        if request.url.path in OPENAI_PATHS:
            items = detail if isinstance(detail, list) else [{"msg": str(detail)}]
            message = "; ".join(str(item.get("msg", item)) for item in items)
            where = next((item["loc"][-1] for item in items if isinstance(item.get("loc"), list | tuple)), None)
            kind = "invalid_request_error" if status < 500 else "server_error"
            body["error"] = {"message": message, "type": kind, "param": where, "code": None}
        return Response(json.dumps(body, ensure_ascii=True), status_code=status, media_type="application/json")

    @app.exception_handler(RequestValidationError)
    async def refused(request, exc: RequestValidationError) -> Response:
        return refusal(request, 422, jsonable_encoder(exc.errors()))

    @app.exception_handler(HTTPException)
    async def answered(request, exc: HTTPException) -> Response:
        response = refusal(request, exc.status_code, exc.detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response


class RequireKey:
    """ASGI middleware: 401 unless the request carries `Authorization: Bearer KEY` (compared in
    constant time); health, the playground page and metrics stay open, as do CORS preflights."""

    def __init__(self, app, expected: bytes):
        self.app, self.expected = app, expected

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            return await self.app(scope, receive, send)
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            return await self.app(scope, receive, send)
        from fastapi.responses import JSONResponse

        refusal = JSONResponse(
            {"detail": "missing or wrong API key: send Authorization: Bearer KEY"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await refusal(scope, receive, send)


class AccessLog:
    """ASGI middleware: each request counted by route pattern and status, and one JSON line in the
    access log when its response has been sent (a stream's, when the stream ends)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500  # an exception escaping the app is answered 500 outside

        async def sent(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            path = getattr(scope.get("route"), "path", "other")  # the route's pattern: bounded label values
            self.metrics.requests.labels(path, str(status)).inc()
            client = scope.get("client")
            access_log.info(
                json.dumps(
                    {
                        "method": scope["method"],
                        "path": scope["path"],
                        "status": status,
                        "ms": round((time.perf_counter() - start) * 1000, 1),
                        "client": client[0] if client else None,
                    }
                )
            )


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before the app reads it whole
    (by its Content-Length, or by counting a chunked body as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await self._refuse(send)
        received = 0

        async def counted():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        body = json.dumps({"detail": f"request body over {self.limit:,} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
