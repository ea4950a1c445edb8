"""Running the server: one process, or `--workers N` processes sharing the port.

Why workers: one server process is held to about one core by Python's interpreter lock (its event
loop, writing every SSE event, and its engine thread take turns), so under many streaming clients
a second core stays mostly idle, and two processes serve far more (benchmarks/RESULTS.md, "The
quantized products' dispatch": `gentext serve --workers 2`). uvicorn's supervisor starts the
workers (spawned processes that build the app with `worker_app`), restarts one that dies and stops
them all on SIGINT/SIGTERM; the kernel spreads the connections over them.

Each worker loads its own copy of the models (memory x N), runs its own batch and keeps its own
limits and metrics: --max-concurrency and the other limits are per worker, and /metrics answers
for the worker that took the scrape. The cores are split: each worker gets the usable cores divided
by N (at least one) unless --threads fixes the count. The runs are loaded once in the supervisor
first, so a bad run is a one-line error before any worker starts.
"""

import dataclasses
import gc
import json
import logging
import os
import socket
from pathlib import Path

from gentext.errors import GentextError
from gentext.server.ops import is_loopback
from gentext.useconfig import ServerLimits

logger = logging.getLogger("gentext.server")
SPEC_VARIABLE = "GENTEXT_SERVE_SPEC"  # the workers' settings, passed through the environment


def serve(
    runs: list[str],
    host: str,
    port: int,
    limits: ServerLimits,
    api_key: str | None = None,
    cors_origins: list[str] | None = None,
    batching: bool = True,
    load: dict | None = None,
    threads: int | None = None,
) -> None:
    """Load every run once (`load`: LoadConfig's device and weights), then serve until interrupted,
    in this process or in `limits.workers` processes (`threads`: --threads, else the cores split)."""
    try:
        import uvicorn
    except ImportError:
        raise GentextError("gentext serve needs FastAPI and uvicorn: pip install 'gentext[serve]'") from None
    workers = limits.validate().workers
    _check_free(host, port)
    if not api_key and not is_loopback(host):
        logger.warning("serving on %s without an API key: anyone who reaches it can use it (set --api-key)", host)
    spec = {"runs": runs, "limits": dataclasses.asdict(limits), "api_key": api_key, "cors_origins": cors_origins}
    spec.update(batching=batching, load=load or {}, threads=threads)
    logging.getLogger("gentext.access").setLevel(logging.INFO)
    options = dict(host=host, port=port, log_level="info", access_log=False)  # gentext.access logs instead
    options["timeout_graceful_shutdown"] = max(1, int(limits.request_timeout))
    if workers == 1:
        from gentext.threads import serving

        serving()
        uvicorn.run(_settled(_app(spec)), **options)
        return
    _app(spec)  # the runs load here first, and are dropped: a bad one is refused before any worker starts
    gc.collect()
    if threads is None:  # each worker a share of the cores, unless --threads fixes it
        from gentext.threads import usable_cpus

        spec["threads"] = max(1, usable_cpus() // workers)
    os.environ[SPEC_VARIABLE] = json.dumps(spec)
    uvicorn.run("gentext.server.running:worker_app", factory=True, workers=workers, **options)


def _check_free(host: str, port: int) -> None:
    """A port another process holds, or an address this machine does not have, is refused in one
    line before any run loads (uvicorn would say so only after loading, among its shutdown lines).
    The probe takes the port as uvicorn will (address reuse on), so a closing socket is no refusal."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        with socket.create_server((host, port), family=family):
            pass
    except OSError as exc:
        reason = (exc.strerror or str(exc)).split(" (while attempting")[0]  # the address is said already
        raise GentextError(f"cannot listen on {host}:{port}: {reason}") from None


def worker_app():
    """One worker's app, built from the supervisor's settings (uvicorn calls this in each worker)."""
    spec = json.loads(os.environ[SPEC_VARIABLE])
    from gentext.threads import configure

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")  # as the CLI's main
    logging.getLogger("gentext.access").setLevel(logging.INFO)
    configure(spec["threads"])
    return _settled(_app(spec))


def _settled(app):
    """`app`, with everything loading made (modules, models, tokenizers) moved out of the garbage
    collector's reach: a full collection walked those ~170k objects for ~75 ms, a pause that every
    stream then waited through (time-to-first-token p99; RESULTS.md). Only in the process that
    serves: the supervisor's own load is dropped and must stay collectable."""
    gc.collect()
    gc.freeze()
    return app


def _app(spec: dict):
    from gentext.api import load as load_run
    from gentext.server import create_app

    runs = spec["runs"]
    models = {name: load_run(run, **spec["load"]) for name, run in zip(run_names(runs), runs, strict=True)}
    settings = {key: spec[key] for key in ("api_key", "cors_origins", "batching")}
    return create_app(models, ServerLimits(**spec["limits"]), **settings)


def run_names(runs: list[str]) -> list[str]:
    """A distinct short name per run directory: its folder name, with as many parent folders as it
    takes to tell it from the others (a/run and b/run stay "a/run" and "b/run", not two "run"s).
    The same directory twice is an error."""
    resolved = [Path(run).resolve() for run in runs]
    if len(set(resolved)) < len(resolved):
        twice = next(str(r) for r in resolved if resolved.count(r) > 1)
        raise GentextError(f"{twice} is given twice")

    def suffix(path: Path, depth: int) -> str:
        return "/".join(path.parts[-depth:])

    names = []
    for path in resolved:
        others = [p for p in resolved if p != path]
        depth = 1
        while depth < len(path.parts) and any(suffix(p, depth) == suffix(path, depth) for p in others):
            depth += 1
        names.append(suffix(path, depth))
    return names
