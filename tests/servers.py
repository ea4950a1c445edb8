"""`gentext serve` in a process of its own on a free 127.0.0.1 port, and EleutherAI's
lm-evaluation-harness scoring it: for the tests that talk to a server over HTTP and for the serving
benchmarks (benchmarks/servers.py imports this)."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def start_server(run: Path, *flags: str, stderr=subprocess.DEVNULL, wait: float = 30.0):
    """`gentext serve RUN` on a free 127.0.0.1 port: (the process, its base URL) once /healthz
    answers (or `wait` seconds passed); the caller stops it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "gentext", "serve", str(run), "--port", str(port), *flags]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    for _ in range(int(wait / 0.2)):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    return proc, url


@contextlib.contextmanager
def running_server(run: Path, *flags: str):
    """`gentext serve RUN` on a free 127.0.0.1 port; yields its base URL once /healthz answers."""
    proc, url = start_server(run, *flags)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


LM_EVAL_TASK = """task: gentext_docs
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
"""


def lm_eval_bits_per_byte(name: str, url: str, docs: list[str], work: Path, max_length: int | None = None) -> float:
    """lm-eval's `local-completions` model scoring `docs` (loglikelihood_rolling) through the served
    run `name` at `url`: its bits per byte. Its files go under `work`; a failure raises with the
    end of lm-eval's stderr."""
    (work / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (work / "gentext_docs.yaml").write_text(LM_EVAL_TASK.format(docs=work / "docs.jsonl"))
    for old in (work / "out").rglob("*.json"):
        old.unlink()  # a file left by an earlier call would be read as this one's
    args = f"model={name},base_url={url}/v1/completions,tokenized_requests=False,tokenizer_backend=remote,"
    args += "num_concurrent=1,max_retries=1" + (f",max_length={max_length}" if max_length else "")
    done = subprocess.run(
        [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", args, "--tasks",
         "gentext_docs", "--include_path", str(work), "--output_path", str(work / "out")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"lm_eval failed:\n{done.stderr[-3000:]}")
    result = json.loads(next((work / "out").rglob("results_*.json")).read_text())
    return result["results"]["gentext_docs"]["bits_per_byte,none"]
