"""From the engine to the HTTP response: admission (`Gate`, `Slot`) and the typed events of one
request as an async stream (`request_events`).

The engine's thread hands each event to the event loop through `_Mailbox`, with at most one wake-up
pending (a batch step that produces 64 pieces wakes the loop once). `request_events` joins text
that piled up into one event, and holds text that arrives within `interval` seconds of the last
event until the interval is up or the request ends (the first token and the end never wait), so
a stream at a thousand tokens a second sends fifty events instead of a thousand, each of which
costs the server and the client more than the token did (vLLM's `--stream-interval` is the same
idea). The joined text is the same.
"""

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from gentext.inference.engine import Engine
from gentext.inference.events import Event, Text
from gentext.inference.jobs import Prompt
from gentext.useconfig import SampleConfig


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
    `running` bounds the requests computed on a thread of their own (scoring, attention).

    A thread-safe count rather than anyio's CapacityLimiter: slots are released from worker and
    engine threads, where anyio's primitives may not be touched."""

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


class _Mailbox:
    """Hands items from the engine's thread to an event loop's queues with at most one wake-up of
    the loop pending: a batch step that produces 64 pieces wakes the loop once, not 64 times."""

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


class _Events(asyncio.Queue):
    """A request's events on the loop. `hold(until)` waits until then for more text, but no longer
    than the request's end: a last piece that arrives within the interval goes out with its `Done`
    at once, so the interval never delays the end of a request."""

    waker: asyncio.Future | None = None

    def put_nowait(self, item) -> None:
        super().put_nowait(item)
        if not isinstance(item, Text) and self.waker is not None and not self.waker.done():
            self.waker.set_result(None)

    async def hold(self, loop: asyncio.AbstractEventLoop, until: float) -> None:
        self.waker = loop.create_future()
        timer = loop.call_at(until, lambda waker=self.waker: waker.done() or waker.set_result(None))
        try:
            await self.waker
        finally:
            timer.cancel()
            self.waker = None


def sse_event(event: str, data: dict[str, Any]) -> dict[str, str]:
    """One server-sent event, for sse-starlette's EventSourceResponse."""
    return {"event": event, "data": json.dumps(data)}


def joined(texts: list[Text]) -> Text:
    """Several steps' Text events as one: each sample's pieces, tokens and log-probabilities joined."""
    if len(texts) == 1:
        return texts[0]
    pieces = ["".join(parts) for parts in zip(*(t.pieces for t in texts), strict=True)]
    tokens = [sum(parts, []) for parts in zip(*(t.tokens for t in texts if t.tokens), strict=True)]
    logprobs = [sum(parts, []) for parts in zip(*(t.logprobs for t in texts if t.logprobs), strict=True)]
    return Text(pieces, tokens, logprobs)


async def request_events(
    engine: Engine, start: Prompt, config: SampleConfig, slot: Slot, interval: float = 0.0,
    on_first: Callable[[], None] | None = None,
) -> AsyncIterator[Event]:  # fmt: skip
    """One request on the engine, as its events: `Text` (joined as above), then `Done` or `Failed`.
    The slot is freed when the request ends, and a consumer that stops listening (a client that
    disconnected) cancels it: its rows leave the batch at the next step. `on_first()` is called
    when the first text goes out (time to first token)."""
    loop = asyncio.get_running_loop()
    queue = _Events()
    mailbox, cancelled = _mailbox(loop), threading.Event()

    def listener(event: Event) -> None:  # on the engine's thread
        if not isinstance(event, Text):
            slot.release()
        mailbox.post(queue, event)

    engine.submit(start, config, listener, cancelled, start=True)
    last, held = None, []  # when text last went out; steps that released no text yet
    try:
        while True:
            items = [await queue.get()]
            if isinstance(items[0], Text) and last is not None and loop.time() - last < interval:
                await queue.hold(loop, last + interval)
            while not queue.empty():
                items.append(queue.get_nowait())
            held += [item for item in items if isinstance(item, Text)]
            end = next((item for item in items if not isinstance(item, Text)), None)  # always the last
            if held and (end is not None or any(joined(held).pieces)):
                if last is None and on_first is not None:
                    on_first()
                last = loop.time()
                yield joined(held)
                held = []
            if end is not None:
                yield end
                return
    finally:
        cancelled.set()  # the request leaves the batch at its next step (nothing happens if it ended)
        slot.release()
