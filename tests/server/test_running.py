"""`gentext serve --workers N`: N processes behind one port (server/running.py)."""

import gc
import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import gentext
from tests.servers import start_server


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _children(pid: int) -> set[int]:
    return {int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}


@pytest.mark.slow
def test_workers_serve_the_same_texts_log_each_request_and_stop_together(trained_run, tmp_path):
    log = tmp_path / "serve.log"
    with open(log, "w") as err:
        proc, url = start_server(trained_run, "--workers", "2", stderr=err, wait=60)
        try:
            alone = gentext.load(trained_run).generate("the ", max_new_tokens=20, seed=3)[0]
            body = {"prompt": "the ", "max_new_tokens": 20, "seed": 3}
            assert {_post(url + "/v1/generate", body)["samples"][0] for _ in range(6)} == {alone}
            workers = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
            assert len(workers) == 2  # beside them, multiprocessing's resource tracker
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
    text = log.read_text()
    assert code == 0
    assert text.count('"path": "/v1/generate"') == 6  # every worker writes its access lines
    assert text.count("Finished server process") == 2


def _serve(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "gentext", "serve", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_workers_refuse_a_bad_run_before_starting(tmp_path):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])  # free once the probe closes
    result = _serve(str(tmp_path / "missing"), "--workers", "2", "--port", port)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "missing" in result.stderr
    assert "Started" not in result.stderr


def test_a_port_out_of_range_or_taken_is_refused_in_one_line_before_any_run_loads(tmp_path):
    """uvicorn took port 99999 as 34463 and said it listened on 99999; a taken port it reported
    after loading, among its shutdown lines."""
    missing = str(tmp_path / "missing")  # never read: the port is refused first
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        for flags, said in ((["--port", "99999"], "between 1 and 65535"), (["--port", port], "in use")):
            result = _serve(missing, *flags)
            assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
            assert result.stderr.startswith("error:") and said in result.stderr and "missing" not in result.stderr


def test_the_serving_process_puts_what_loading_made_beyond_the_collector():
    """A full collection over the loaded modules and models paused every stream (tens of ms);
    the serving process freezes them once loaded, so collections walk only what serving makes."""
    from gentext.server.running import _settled

    app, before = object(), gc.get_freeze_count()
    try:
        assert _settled(app) is app
        assert gc.get_freeze_count() > before  # the objects alive now are frozen
        gc.collect()  # and stay alive: a frozen object is never collected
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()
