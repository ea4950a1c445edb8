"""EleutherAI's lm-evaluation-harness scores a served run (`local-completions`, loglikelihood_rolling
over a local text) and its bits per byte are gentext's own."""

import math

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("lm_eval")

import gentext  # noqa: E402
from tests.conftest import TINY_TEXT  # noqa: E402
from tests.servers import lm_eval_bits_per_byte, start_server  # noqa: E402


@pytest.mark.slow
def test_lm_eval_scores_a_served_run_with_gentexts_numbers(trained_run, tmp_path):
    docs = [line for line in TINY_TEXT.splitlines()[:6] if line]
    proc, url = start_server(trained_run)
    try:
        theirs = lm_eval_bits_per_byte(trained_run.name, url, docs, tmp_path)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    model = gentext.load(trained_run)
    ours = -sum(model.score(d)["log_prob"] for d in docs) / sum(len(d.encode()) for d in docs) / math.log(2)
    assert abs(theirs - ours) < 1e-3
