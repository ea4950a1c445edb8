"""Small random networks the kernel tests compare the compiled path with the Python path on."""

import torch

from gentext import native
from gentext.conditions import Condition
from gentext.config import CorpusConfig, ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.inference import ahead
from gentext.inference.engine import Engine
from gentext.inference.results import Collector
from gentext.inference.textmodel import TextModel
from gentext.models import build_model
from gentext.runconfig import RunConfig


def network(kind: str, fmt: str, width: int = 100, vocab: int = 30):
    torch.manual_seed(0)
    config = ModelConfig(kind=kind, vocab_size=vocab, embed_size=16, hidden_size=width, num_layers=2)
    model = build_model(config).eval()
    model.set_weight_format(fmt)
    return model


def greedy_steps(model, rows: int = 3, count: int = 12):
    """Logits and states of `count` greedy steps from cold rows."""
    out, state, ids = [], model.initial_state(rows), torch.arange(rows) % (model.config.vocab_size - 1) + 1
    with torch.inference_mode():
        for _ in range(count):
            logits, state = model(ids[:, None], state)
            out.append((logits, *state.tensors.values()))
            ids = logits[:, 0].argmax(-1)
    return out


def text_model(kind: str, fmt: str, mode: str = "stream", width: int = 100):
    """A bare network (no chain mixed in) over 30 characters, the newline among them."""
    chars = ["\n", *(chr(97 + i) for i in range(26)), " ", ".", ","]
    run = RunConfig(corpus=CorpusConfig(mode=mode))
    return TextModel(network(kind, fmt, width), CharTokenizer(chars), run, condition=Condition())


def together(model: TextModel, requests: list[tuple[str, dict]], calls: list | None = None) -> list[list[str]]:
    """Each request's texts, every request submitted to one engine at once (one cohort, stepping
    together); `calls`, where given, gets one entry per run the requests took together."""
    engine, collectors = Engine(model, max_rows=64), []
    for prompt, settings in requests:
        collectors.append(Collector())
        engine.submit(*model.request(prompt, **settings), collectors[-1])
    real = ahead.together

    def counted(model, cohort, advance):
        jobs = len(cohort.jobs)  # before the run: jobs that end in it leave the cohort
        ran = real(model, cohort, advance)
        if ran and calls is not None:
            calls.append(jobs)
        return ran

    ahead.together = counted
    try:
        with model.eval_mode():
            engine.run_until_idle()
    finally:
        ahead.together = real
    return [collector.texts(prompt) for (prompt, _), collector in zip(requests, collectors, strict=True)]


def together_both(model: TextModel, requests: list[tuple[str, dict]], kernels) -> tuple[list, list, list]:
    """`together` on the Python path and with the kernels: (its texts, the kernels' texts, the
    kernels' runs together, as `calls`)."""
    python, calls = together(model, requests), []
    native.use(kernels)
    try:
        return python, together(model, requests, calls), calls
    finally:
        native.use(None)
