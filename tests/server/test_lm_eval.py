"""EleutherAI's lm-evaluation-harness scores a served run (`local-completions`, loglikelihood_rolling
over a local text) and its bits per byte are gentext's own."""

import json
import math
import subprocess
import sys

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("lm_eval")

import gentext  # noqa: E402
from tests.conftest import TINY_TEXT  # noqa: E402
from tests.servers import start_server  # noqa: E402

TASK = """task: gentext_docs
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


@pytest.mark.slow
def test_lm_eval_scores_a_served_run_with_gentexts_numbers(trained_run, tmp_path):
    docs = [line for line in TINY_TEXT.splitlines()[:6] if line]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (tmp_path / "gentext_docs.yaml").write_text(TASK.format(docs=tmp_path / "docs.jsonl"))
    proc, url = start_server(trained_run)
    try:
        args = f"model={trained_run.name},base_url={url}/v1/completions,tokenized_requests=False,"
        args += "tokenizer_backend=remote,num_concurrent=1,max_retries=1"
        done = subprocess.run(
            [sys.executable, "-m", "lm_eval", "--model", "local-completions", "--model_args", args, "--tasks",
             "gentext_docs", "--include_path", str(tmp_path), "--output_path", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    theirs = result["results"]["gentext_docs"]["bits_per_byte,none"]
    model = gentext.load(trained_run)
    ours = -sum(model.score(d)["log_prob"] for d in docs) / sum(len(d.encode()) for d in docs) / math.log(2)
    assert abs(theirs - ours) < 1e-3
