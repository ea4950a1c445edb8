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

from gentext.errors import GentextError
from gentext.inference.batching import BatchEngine, Collector
from gentext.inference.textmodel import TextModel

logger = logging.getLogger(__name__)


class Gate:
    """Counts requests in flight; refuses at once when the queue is full."""

    def __init__(self, running: int, limit: int):
        self.limit = limit
        self.running = threading.BoundedSemaphore(running)
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


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def thread_source(model: TextModel, prompt: str, settings: dict[str, Any], gate: Gate):
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


def batched_source(engine: BatchEngine):
    """The generation as rows of the model's batch (one sample: the streamed one)."""

    def source(model: TextModel, prompt: str, settings: dict[str, Any], gate: Gate):
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


async def batched_samples(engine: BatchEngine, model: TextModel, prompt: str, settings, gate: Gate) -> list[str]:
    """Every sample of a JSON request, generated as rows of the model's batch."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()
    ids, config = model.request(prompt, **settings)

    def ended(kind: str, value: Any) -> None:  # on the engine's thread
        gate.leave()
        if not loop.is_closed():
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result((kind, value)))

    collector = Collector(config.num_samples, on_end=ended)
    engine.submit(ids, config, collector)
    kind, value = await done
    if kind == "error":
        from fastapi import HTTPException

        raise HTTPException(500, detail=value)
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


async def events(start):
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
                yield sse("token", {"text": text})
            end = next(((kind, value) for kind, value in items if kind != "text"), None)  # always the last
            if end is not None:
                kind, value = end
                yield sse("done", {"pieces": count}) if kind == "done" else sse("error", {"detail": value})
                break
    finally:
        cancelled.set()  # the work ends by itself at its next piece or step
