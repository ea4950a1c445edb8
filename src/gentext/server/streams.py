"""Streams from the generation to the HTTP response: where a request's work runs (a thread of its
own, or rows of the model's batch) and how its pieces reach the event loop and become SSE.

Work runs elsewhere and `send(kind, value)`s ("text", piece) ... then ("done", None) or
("error", message); `_Mailbox` hands those to the event loop with at most one wake-up pending
(a batch step producing 64 pieces wakes it once); `events` turns a request's queue into SSE,
joining text that piled up into one event.
"""

import asyncio
import json
import logging
import threading
from typing import Any

from gentext.errors import error_text
from gentext.inference.batching import BatchEngine, Collector
from gentext.inference.textmodel import TextModel

logger = logging.getLogger(__name__)


class Slot:
    """One admitted request's place in the gate. `release` is idempotent, so every path that ends a
    request (done, error, timeout, cancel, disconnect, an exception before the work started) may
    call it, and the place is freed exactly once."""

    def __init__(self, gate: "Gate"):
        self.gate, self.released = gate, False

    def release(self) -> None:
        with self.gate.lock:
            if not self.released:
                self.released = True
                self.gate.count -= 1


class Gate:
    """Admission: counts requests in flight (running or waiting) and refuses at once when full;
    `running` bounds the generations that have a worker thread of their own.

    A thread-safe count rather than anyio's CapacityLimiter: slots are released from worker and
    batch-engine threads, where anyio's primitives may not be touched."""

    def __init__(self, running: int, limit: int):
        self.limit = limit
        self.running = threading.BoundedSemaphore(running)
        self.lock = threading.Lock()
        self.count = 0

    def enter(self) -> Slot | None:
        with self.lock:
            if self.count >= self.limit:
                return None
            self.count += 1
        return Slot(self)


def sse(event: str, data: dict[str, Any]) -> dict[str, str]:
    """One server-sent event, for sse-starlette's EventSourceResponse."""
    return {"event": event, "data": json.dumps(data)}


def thread_source(model: TextModel, prompt: str, settings: dict[str, Any], slot: Slot, gate: Gate):
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
                send("error", error_text(exc))
            finally:
                slot.release()

        asyncio.get_running_loop().run_in_executor(None, work)

    return start


def batched_source(engine: BatchEngine):
    """The generation as rows of the model's batch (one sample: the streamed one)."""

    def source(model: TextModel, prompt: str, settings: dict[str, Any], slot: Slot, gate: Gate):
        ids, config = model.request(prompt, **settings)  # bad input raises here, before the stream starts

        def start(send, cancelled: threading.Event) -> None:
            def emit(kind: str, value: Any) -> None:
                if kind != "text":
                    slot.release()
                send(kind, value[0] if kind == "text" else value)

            send("text", prompt)  # as `TextModel.stream` does: the prompt, then what follows
            job = engine.submit(ids, config, emit)
            job.cancelled = cancelled  # a client that goes away leaves the batch at the next step

        return start

    return source


async def batched_samples(engine: BatchEngine, model: TextModel, prompt: str, settings, slot: Slot) -> list[str]:
    """Every sample of a JSON request, generated as rows of the model's batch."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    ids, config = model.request(prompt, **settings)

    def ended(kind: str, value: Any) -> None:  # on the engine's thread
        slot.release()
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result((kind, value)))

    collector = Collector(config.num_samples, on_end=ended)
    job = engine.submit(ids, config, collector)
    try:
        kind, value = await done
    finally:
        job.cancelled.set()  # a client gone before the end: the rows leave at the next step
    if kind == "error":
        from fastapi import HTTPException

        raise HTTPException(400 if not str(value).startswith("internal error") else 500, detail=value)
    return collector.texts(prompt)


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


async def events(start, on_first=None, skip: int = 0, interval: float = 0.0):
    """SSE: `token` events with the text produced, then `done` (or `error`). `start(send, cancelled)`
    sets the work going elsewhere; its `send(kind, value)` calls reach this coroutine through an
    asyncio queue. A client that disconnects cancels the coroutine, which sets `cancelled`.
    `on_first()` is called when the first generated text goes out, past the `skip` characters of
    the echoed prompt (time to first token).

    Text that arrives within `interval` seconds of the last event waits for the rest of the
    interval and goes out with what followed, as one event (the first token is never held): a
    stream at a thousand tokens a second sends fifty events instead of a thousand, each of which
    costs the server and the client more than the token did (issue 27's load test; vLLM's
    `--stream-interval` does the same). The joined text is the same."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    mailbox = _mailbox(loop)
    cancelled = threading.Event()
    start(lambda kind, value: mailbox.post(queue, (kind, value)), cancelled)
    sent, last = 0, -float("inf")
    try:
        count = 0
        while True:
            items = [await queue.get()]
            if items[0][0] == "text" and sent > skip and loop.time() - last < interval:  # past the first token
                await asyncio.sleep(last + interval - loop.time())
            while not queue.empty():
                items.append(queue.get_nowait())
            text = "".join(value for kind, value in items if kind == "text")
            if text:
                count += 1
                if sent <= skip < sent + len(text) and on_first is not None:
                    on_first()
                sent += len(text)
                last = loop.time()
                yield sse("token", {"text": text})
            end = next(((kind, value) for kind, value in items if kind != "text"), None)  # always the last
            if end is not None:
                kind, value = end
                yield sse("done", {"pieces": count}) if kind == "done" else sse("error", {"detail": value})
                break
    finally:
        cancelled.set()  # the work ends by itself at its next piece or step
