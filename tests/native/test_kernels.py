"""The compiled kernels (gentext/native): built once, the same numbers as the Python path bit for
bit, taken up when a background build lands, and the Python path whenever they are not there."""

import itertools
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

import gentext
from gentext import native, threads
from gentext.config import ModelConfig
from gentext.inference.jobs import AHEAD
from gentext.inference.sampler import Sampler, make_generator
from gentext.models import build_model
from gentext.models.weights import fast_formats
from gentext.useconfig import SampleConfig
from tests.conftest import HARD_ROWS
from tests.native.small import greedy_steps, network, text_model


@pytest.fixture
def compiled(kernels):
    """The compiled path on for one test."""
    native.use(kernels)
    yield kernels
    native.use(None)


@pytest.mark.slow
@pytest.mark.isa
@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn", "mingru"])
def test_the_compiled_step_gives_the_python_steps_numbers_bit_for_bit(kind, kernels):
    formats = ["fp32", *(f for f in fast_formats(torch.device("cpu")) if f != "fp32")]
    # 512: every product in its format; 100: a width off the vector length. A lone row's LSTM cell
    # takes one sigmoid over its gates where the width allows it, a batch's 16 rows do not; 16 and
    # 40 rows split their cell, copies and sums between the suite's threads (where it has two).
    for fmt, width, rows in itertools.product(formats, (100, 512), (1, 3, 16, 40)):
        python = greedy_steps(network(kind, fmt, width), rows)
        native.use(kernels)
        try:
            model = network(kind, fmt, width)
            compiled = greedy_steps(model, rows)
            assert model._step_ops()["native"] is not None  # the kernel ran, not the fallback
        finally:
            native.use(None)
        for a, b in zip(python, compiled, strict=True):
            assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), (kind, fmt, width, rows)


@pytest.mark.isa
def test_a_transformers_step_with_the_kernels_int8_products_gives_the_python_numbers(kernels):
    """A Transformer's step runs in Python; with the kernels loaded its int8 products are theirs."""
    config = ModelConfig(kind="transformer", vocab_size=30, hidden_size=256, num_layers=2, num_heads=4, context=16)
    torch.manual_seed(0)
    model = build_model(config).eval()
    model.set_weight_format("int8")
    python = greedy_steps(model, 1, 20) + greedy_steps(model, 3, 20)  # past the context: the window slides
    native.use(kernels)
    try:
        compiled = greedy_steps(model, 1, 20) + greedy_steps(model, 3, 20)
        assert model._step_ops()["blocks"][0]["qkv"]._product[1] is not None
    finally:
        native.use(None)
    for a, b in zip(python, compiled, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("temperature", [0, 0.05, 0.7, 1.0, 1.6])
@pytest.mark.parametrize("suppress", [None, [3]])
def test_the_compiled_draw_picks_the_python_draws_ids(temperature, suppress, kernels):
    """A lone row's draw and a batch's (`draw_rows`): the same ids, draw for draw, from the same seed."""
    sampler = Sampler(SampleConfig(temperature=temperature), suppress)
    rows = [[row] for row in HARD_ROWS] + [[torch.randn(300).mul(4).tolist()], HARD_ROWS, torch.randn(7, 300).tolist()]
    for row in rows:
        logits = torch.tensor(row)
        python_gen, native_gen = make_generator(5), make_generator(5)
        python = [_listed(sampler.choose(logits, python_gen)) for _ in range(20)]
        native.use(kernels)
        try:
            compiled = [_listed(sampler.choose(logits, native_gen)) for _ in range(20)]
        finally:
            native.use(None)
        assert compiled == python


def _listed(ids) -> list[int]:
    return ids if isinstance(ids, list) else ids.tolist()


def test_the_compiled_uniform_numbers_are_torch_rands_from_each_generator(kernels):
    counts = [1, 3, 20, 1]
    python_gens, native_gens = [make_generator(s) for s in range(4)], [make_generator(s) for s in range(4)]
    python = torch.cat([torch.rand(n, generator=g) for g, n in zip(python_gens, counts, strict=True)])
    assert torch.equal(kernels.uniforms(native_gens, counts), python)
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(python_gens, native_gens, strict=True))


@pytest.mark.slow
@pytest.mark.parametrize("suppress", [None, [3]])
def test_the_compiled_greedy_choice_is_the_python_rules_and_draws_nothing(suppress, kernels):
    """Temperature 0 in the compiled draw (what a greedy lone row runs ahead with): the first
    largest logit, NaN counted largest, -1 where nothing is allowed; the generator untouched."""
    sampler = Sampler(SampleConfig(temperature=0), suppress)
    index = None if suppress is None else torch.tensor(suppress)
    for row in [*HARD_ROWS, torch.randn(300).mul(4).tolist()]:
        logits, generator = torch.tensor([row]), make_generator(5)
        before = generator.get_state()
        python = sampler.choose(logits, None)
        assert [kernels.plain_draw(logits, 0.0, index, generator)] == python, row
        assert torch.equal(generator.get_state(), before)


@pytest.mark.slow
def test_a_trained_run_writes_the_same_text_on_either_path(trained_run, kernels):
    model = gentext.load(trained_run, weights="int8")
    settings = [dict(seed=3), dict(temperature=0), dict(num_samples=3, seed=4), dict(num_beams=3)]
    python = [model.generate("The ", max_new_tokens=40, **s) for s in settings]
    streamed = "".join(model.stream("The ", max_new_tokens=40, seed=3))
    together = model.generate_many(["The ", "A ", "\n"], max_new_tokens=40, seed=5)  # one draw, three generators
    native.use(kernels)
    try:
        assert [model.generate("The ", max_new_tokens=40, **s) for s in settings] == python
        assert "".join(model.stream("The ", max_new_tokens=40, seed=3)) == streamed
        assert model.generate_many(["The ", "A ", "\n"], max_new_tokens=40, seed=5) == together
        assert native.status().startswith("compiled")
    finally:
        native.use(None)


@pytest.mark.slow
@pytest.mark.isa
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_small_steps_products_on_two_cores_give_the_one_core_numbers(kind, kernels, monkeypatch):
    """A small step hands half of each wide int8 product to the helper core: the Python path's
    numbers bit for bit, step by step and in compiled runs, and while two threads generate at once
    (one of them then makes both halves itself)."""
    shapes = [dict(width=512), dict(width=64, vocab=1100)]  # wide layers; a word-sized int8 head
    python = [greedy_steps(network(kind, "int8", **shape), rows=1) for shape in shapes]
    text = text_model(kind, "int8", width=512).generate("the ", max_new_tokens=2 * AHEAD, seed=1)
    monkeypatch.setattr(threads, "spare_core", lambda rows: True)
    monkeypatch.setattr(threads, "may_split", lambda: True)
    native.use(kernels)
    try:
        for shape, expected in zip(shapes, python, strict=True):
            before = kernels.split_products()
            for a, b in zip(expected, greedy_steps(network(kind, "int8", **shape), rows=1), strict=True):
                assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), shape
            assert kernels.split_products() > before  # the halves ran
        models = [text_model(kind, "int8", width=512) for _ in range(2)]
        with ThreadPoolExecutor(2) as pool:
            texts = list(pool.map(lambda m: m.generate("the ", max_new_tokens=2 * AHEAD, seed=1), models))
    finally:
        native.use(None)
    assert texts == [text, text]


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork here")
def test_a_forked_child_splits_with_a_helper_of_its_own(kernels, monkeypatch):
    """A child forked after the helper started has none of its threads: it makes its own helper
    and gets the parent's numbers (it would wait forever on the parent's)."""
    monkeypatch.setattr(threads, "spare_core", lambda rows: True)
    monkeypatch.setattr(threads, "may_split", lambda: True)
    native.use(kernels)
    try:
        expected = greedy_steps(network("lstm", "int8", 512), rows=1, count=4)  # the parent's helper runs
        pid = os.fork()
        if pid == 0:  # the child: exit 0 only with the same numbers and the helper's halves made
            torch.set_num_threads(1)
            before = kernels.split_products()
            got = greedy_steps(network("lstm", "int8", 512), rows=1, count=4)
            same = all(torch.equal(x, y) for a, b in zip(expected, got, strict=True) for x, y in zip(a, b, strict=True))
            os._exit(0 if same and kernels.split_products() > before else 1)
        _, status = os.waitpid(pid, 0)
    finally:
        native.use(None)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.slow
def test_a_build_that_lands_in_the_background_is_taken_up(kernels, tmp_path, monkeypatch):
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path))
    monkeypatch.setenv("GENTEXT_NATIVE", "auto")
    monkeypatch.setattr(native, "POLL_SECONDS", 0.0)
    builder = _Builder()
    monkeypatch.setattr(native, "_start_builder", lambda: builder)
    native.prepare()  # nothing built here: a background build starts, the Python path runs meanwhile
    assert native.kernels() is None and "background" in native.status()
    built = native.entry()
    built.mkdir(parents=True)
    shutil.copy(kernels.built, built)
    builder.done = True
    assert native.kernels() is not None  # the builder ended and its module is loaded
    native.use(None)
    native._LOADER.builder = None


class _Builder:
    """A stand-in for the builder process: running until `done`."""

    done = False

    def poll(self):
        return 0 if self.done else None


@pytest.mark.slow
def test_a_failed_build_is_recorded_and_the_python_path_runs(tmp_path, monkeypatch):
    if native._missing_tools():
        pytest.skip("no compiler: nothing to fail")
    broken = tmp_path / "kernels.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(native, "SOURCE", broken)
    monkeypatch.setenv("GENTEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("GENTEXT_NATIVE", "wait")
    native.prepare()
    assert native.kernels() is None and (native.entry() / "failed.log").exists()
    assert "failed" in native.status()
    native.prepare()  # recorded: not tried again
    assert "failed" in native.status()


def test_off_means_the_python_path(monkeypatch):
    monkeypatch.setenv("GENTEXT_NATIVE", "off")
    native.prepare()
    assert native.kernels() is None and native.status() == "Python (GENTEXT_NATIVE=off)"


@pytest.mark.slow
def test_python_m_gentext_native_builds_into_the_cache(kernels, tmp_path):
    """What the background build runs; here the entry is already built, so it returns at once."""
    done = subprocess.run([sys.executable, "-m", "gentext.native"], capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
