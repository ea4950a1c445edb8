"""From a request to its events: where its checks run, and how `--stream-interval` joins text
(server/streams.py)."""

import asyncio
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

import gentext  # noqa: E402
from gentext.inference import textmodel  # noqa: E402
from gentext.server import ServerLimits, create_app  # noqa: E402


def test_a_pattern_to_constrain_to_is_compiled_off_the_event_loop(trained_run, monkeypatch):
    """Compiling a regex or a JSON schema can take a while: the loop must keep serving meanwhile."""
    threads = []
    compile_for = textmodel.compile_for

    def recorded(*args, **kwargs):
        try:
            asyncio.get_running_loop()
            threads.append("event loop")
        except RuntimeError:
            threads.append("worker")
        return compile_for(*args, **kwargs)

    monkeypatch.setattr(textmodel, "compile_for", recorded)
    client = TestClient(create_app({"tiny": gentext.load(trained_run)}, ServerLimits()))
    for stream in (False, True):
        body = {"prompt": "The ", "max_new_tokens": 5, "regex": "[a-z]+", "stream": stream}
        assert client.post("/v1/generate", json=body).status_code == 200
    assert threads == ["worker", "worker"]


def _timed_events(pieces: list[str], interval: float) -> list[tuple[float, str]]:
    """(seconds since the start, text) of each event `request_events` makes from pieces a thread sends 2 ms apart
    (the first 50 ms before the rest, so that it goes out alone), as an engine's listener hears them."""
    from gentext.inference.events import Done, Text
    from gentext.server.streams import Gate, request_events

    class Engine:
        def submit(self, prompt, config, listener, cancelled, **_):
            def work():
                for i, piece in enumerate(pieces):
                    listener(Text([piece]))
                    time.sleep(0.002 if i else 0.05)
                listener(Done(["length"], [len(pieces)]))

            threading.Thread(target=work, daemon=True).start()

    async def collect():
        out, began = [], time.monotonic()
        async for event in request_events(Engine(), None, None, Gate(1, 1).enter(), interval):
            out.append((time.monotonic() - began, event))
        return out

    out = asyncio.run(collect())
    assert isinstance(out[-1][1], Done)
    return [(t, event.pieces[0]) for t, event in out if isinstance(event, Text)]


def test_streamed_text_waits_at_most_the_interval_and_joins_to_the_same_text():
    pieces = ["The "] + [chr(97 + i % 26) for i in range(60)]
    texts = _timed_events(pieces, 0.05)
    assert "".join(text for _, text in texts) == "".join(pieces)
    assert texts[0][1] == "The " and len(texts) < len(pieces) / 2  # far fewer events than tokens
    gaps = [b[0] - a[0] for a, b in zip(texts[1:], texts[2:], strict=False)]  # after the first token
    assert len(gaps) > 1 and min(gaps[:-1]) >= 0.045  # the last goes out with the end, at once


def test_neither_the_first_token_nor_the_end_is_held_back_by_the_interval():
    """The pieces after the first arrive within the interval and the request ends: they go out
    with the end at once, not when the interval is up."""
    texts = _timed_events(["a", "b", "c", "d"], 30.0)
    assert [text for _, text in texts] == ["a", "bcd"]
    assert texts[0][0] < 5 and texts[1][0] - texts[0][0] < 5
