"""Shared fixtures: tiny corpora and tiny model settings so the suite runs in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest

from gentext import threads

threads.prepare()  # as the `gentext` command does before torch loads: the suite's own process runs alike

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Logit rows where samplers go wrong: what the Python and the compiled draw must agree on.
HARD_ROWS = [
    [2.0, -1.0, 0.5, 3.0, 3.0],  # a tie at the top
    [float("-inf")] * 5,  # no allowed token
    [float("nan"), 1.0, 2.0, 0.0, -1.0],  # a NaN among finite logits
    [1e30, -1e30, 0.0, 1e30, 5.0],  # huge logits
    [float("-inf"), float("-inf"), -3.0, float("-inf"), float("-inf")],  # one token left
]

TINY_TEXT = (
    "The quick brown fox jumps over the lazy dog. Über café, naïve façade — 日本語 too.\n"
    "A stitch in time saves nine; the early bird catches the worm.\n"
) * 40

BACKGROUND = pytest.StashKey()  # the slow commands run one by one beside the suite (tests/background.py)

# Small enough to train a few steps in well under a second. The network alone (mix_order=0): on these
# repetitive texts a Kneser-Ney chain predicts almost every token, and a mixed run would test the
# chain (tests/models/test_mixture.py tests the mixture). An LSTM, named: the default (--model auto)
# chooses by the text and budget (tests/training/test_defaults.py), and these runs test everything else.
TINY_SETTINGS = dict(
    kind="lstm",
    hidden_size=32,
    embed_size=16,
    num_layers=1,
    batch_size=4,
    seq_len=16,
    eval_every=5,
    mix_order=0,
    cache_window=0,
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items):
    """Tests that read a background command run last, by when it is ready (tests/background.py),
    and are slow by definition: each waits on a command that runs for minutes."""
    for item in items:
        if item.get_closest_marker("background") is not None:
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.get_closest_marker("background") is not None)  # stable: order kept


def pytest_collection_finish(session):
    """Start the background commands the selected tests name, one after another, now: they then
    overlap the rest of the suite (the README quickstart's fresh `pip install` first)."""
    import shutil
    import tempfile

    keys = [m.args[0] for item in session.items for m in item.iter_markers("background")]
    keys = sorted(dict.fromkeys(keys), key=lambda k: k != "quickstart")
    if not keys:
        return
    from tests.background import Background, heavy_job, quickstart_job

    where = Path(tempfile.mkdtemp(prefix="gentext-background-"))
    jobs = {key: quickstart_job(where) if key == "quickstart" else heavy_job(key) for key in keys}
    runner = session.config.stash[BACKGROUND] = Background(jobs)
    session.config.add_cleanup(lambda: (runner.stop(), shutil.rmtree(where, ignore_errors=True)))


def pytest_terminal_summary(terminalreporter, config):
    """One line of each background command's wall time: what to look at when CI nears its budget."""
    runner = config.stash.get(BACKGROUND, None)
    if runner is not None and runner.seconds:
        times = ", ".join(f"{key} {seconds:.0f} s" for key, seconds in runner.seconds.items())
        terminalreporter.write_line(f"background commands: {times}")


@pytest.fixture(scope="session")
def background(request):
    """The runner of the background commands (tests/background.py)."""
    return request.config.stash[BACKGROUND]


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Token caches and downloads go to a temporary directory, never to the user's ~/.cache (the
    environment variable reaches the CLI subprocesses too)."""
    import os

    old = os.environ.get("GENTEXT_CACHE")
    os.environ["GENTEXT_CACHE"] = str(tmp_path_factory.mktemp("gentext-cache"))
    yield
    if old is None:
        os.environ.pop("GENTEXT_CACHE", None)
    else:
        os.environ["GENTEXT_CACHE"] = old


@pytest.fixture(autouse=True, scope="session")
def _threads_fixed():
    """The suite's own process runs at a fixed thread count, as `--threads N` does: tests compare
    runs bit for bit (resume, batched vs alone), which a count adapting between them would break,
    and in-process commands then print nothing about a busy machine. The adapting is tested by
    test_threads.py; the commands the tests start as subprocesses adapt as shipped."""
    from gentext import threads

    threads.configure(threads.usable_cpus())


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """One tiny trained run directory shared by read-only tests."""
    import gentext

    root = tmp_path_factory.mktemp("runs")
    corpus = root / "tiny.txt"
    corpus.write_text(TINY_TEXT, encoding="utf-8")
    out = root / "run"
    gentext.train(out, paths=[str(corpus)], steps=10, **TINY_SETTINGS)
    return out


def _words(rng, letters: str) -> str:
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 7)))


@pytest.fixture(scope="session")
def labelled_root(tmp_path_factory) -> Path:
    """A labelled corpus (two labels whose texts differ in alphabet, grouped by label as such
    files often are) and a tiny LSTM run trained on it: ROOT/labelled.tsv, ROOT/run."""
    import random

    import gentext

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("labelled")
    lines = [f"soft\t{_words(rng, 'aeiou')}" for _ in range(150)]
    lines += [f"hard\t{_words(rng, 'kptgd')}" for _ in range(150)]
    path = root / "labelled.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # mixed as a default run is (one chain per label); tests of the network alone load it with network_only
    settings = {**TINY_SETTINGS, "eval_every": 100, "hidden_size": 64, "mix_order": None}
    gentext.train(root / "run", paths=[str(path)], condition="label", steps=150, **settings)
    return root


def generated_ids(model, prompt_ids: list[int], **settings) -> list[list[int]]:
    """Each sample's new token ids, generated by the engine from a bare model (one distinct
    character per id stands in for a tokenizer, so the text gives the ids back)."""
    from gentext.conditions import Condition
    from gentext.data.tokenizers import CharTokenizer
    from gentext.inference.textmodel import TextModel
    from gentext.runconfig import RunConfig

    vocab = model.config.vocab_size
    chars = [chr(0x4E00 + i) for i in range(vocab)]
    textmodel = TextModel(model, CharTokenizer(chars), RunConfig(), condition=Condition())
    texts = textmodel.generate("".join(chars[i] for i in prompt_ids), **settings)
    return [[ord(c) - 0x4E00 for c in text[len(prompt_ids) :]] for text in texts]


def assert_batches_as_alone(model, prompts: list[str], tokens: int) -> None:
    """Every prompt's sample in one batch (`generate_many`) is the one it gets alone, and a beam
    search starts from its prompt: what any kind of model owes the engine."""
    alone = [model.generate(p, max_new_tokens=tokens, seed=4, temperature=0.9)[0] for p in prompts]
    assert model.generate_many(prompts, max_new_tokens=tokens, seed=4, temperature=0.9) == alone
    beams = model.generate(prompts[0], max_new_tokens=tokens // 2, num_beams=3)[0]
    assert beams.startswith(prompts[0]) and len(beams) > len(prompts[0])


@pytest.fixture(autouse=True, scope="session")
def _python_path():
    """The suite runs the Python per-token path (GENTEXT_NATIVE=off, inherited by the commands it
    starts), so no test waits for or competes with a compiled build; tests/test_native.py builds
    the kernels once and compares the two paths."""
    import os

    old = os.environ.get("GENTEXT_NATIVE")
    os.environ["GENTEXT_NATIVE"] = "off"
    yield
    if old is None:
        os.environ.pop("GENTEXT_NATIVE", None)
    else:
        os.environ["GENTEXT_NATIVE"] = old


@pytest.fixture(scope="session")
def records_runs(tmp_path_factory) -> dict[str, Path]:
    """A char and a byte-level BPE run on a text of dated JSON records (digits, braces, quotes):
    what constrained output is tested on."""
    import json
    import random

    import gentext

    rng = random.Random(0)
    root = tmp_path_factory.mktemp("records")
    names = ["ada", "bob", "cy", "dana", "eve", "finn"]
    lines = [
        json.dumps({"name": rng.choice(names), "age": rng.randint(1, 99)})
        + f" born {rng.randint(1900, 2020)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        for _ in range(600)
    ]
    corpus = root / "records.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    runs = {}
    for level, extra in (("char", {}), ("bpe", {"vocab_size": 300})):
        runs[level] = root / level
        gentext.train(runs[level], paths=[str(corpus)], steps=40, level=level, **{**TINY_SETTINGS, **extra})
    return runs


TINY_FLAGS = [  # the CLI flags of TINY_SETTINGS
    "--model",
    "lstm",
    "--hidden-size",
    str(TINY_SETTINGS["hidden_size"]),
    "--embed-size",
    str(TINY_SETTINGS["embed_size"]),
    "--num-layers",
    "1",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--eval-every",
    "5",
    "--mix-markov",
    "0",
    "--quiet",
]


def ctrl_c_at(at: int):
    """An evaluation callback that sends this process SIGINT at step `at`, as Ctrl-C would."""
    import os
    import signal

    def callback(step, val_loss, model):
        if step == at:
            os.kill(os.getpid(), signal.SIGINT)

    return callback


def latest_weights(run):
    """A run's latest model and optimizer tensors (its train_state.safetensors)."""
    import safetensors.torch

    from gentext.checkpoint import TRAIN_STATE

    tensors = safetensors.torch.load_file(str(run / TRAIN_STATE))
    return {k: v for k, v in tensors.items() if k.startswith(("model.", "optim."))}


def reversals(path, count=300, seed=0):
    """`word<TAB>drow` pairs: a task a source must be read for."""
    import random

    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 7))) for _ in range(count)]
    path.write_text("".join(f"{w}\t{w[::-1]}\n" for w in words), encoding="utf-8")
    return path
