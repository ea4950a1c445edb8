"""Byte-level BPE and lines mode (documents that end by themselves)."""

import json
import math

import pytest

import gentext
from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig
from gentext.data.tokenizers import BPETokenizer, tokenizer_from_json
from tests.conftest import TINY_SETTINGS, TINY_TEXT


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.fit(TINY_TEXT, vocab_size=300)


@pytest.mark.parametrize("text", [TINY_TEXT[:200], "naïve 日本語 🙂 ẞ — never seen: ⊕∮", "line one\n\nline two\n"])
def test_bpe_round_trips_any_text_exactly(bpe, text):
    assert bpe.decode(bpe.encode(text)) == text


def test_bpe_merges_and_keeps_newlines_alone(bpe):
    text = "The quick brown fox.\n"
    ids = bpe.encode(text)
    assert len(ids) < len(text)  # merges happened
    assert [bpe.decode([i]) for i in ids][-1] == "\n"
    assert len(bpe.encode("\n")) == 1


def test_bpe_json_round_trip(bpe):
    again = tokenizer_from_json(json.loads(json.dumps(bpe.to_json())))
    assert again.encode(TINY_TEXT[:300]).tolist() == bpe.encode(TINY_TEXT[:300]).tolist()
    assert bpe.to_json()["type"] == "bpe" and "model" in bpe.to_json()["tokenizers"]


@pytest.mark.slow
def test_bpe_model_trains_generates_and_reports_bpc(tiny_corpus, tmp_path):
    run = tmp_path / "bpe"
    summary = gentext.train(
        run,
        paths=[str(tiny_corpus)],
        tokenizer=TokenizerConfig(level="bpe", vocab_size=300),
        **TINY_SETTINGS,
        steps=10,
    )
    assert summary["val_bpc"] > 0 and math.isfinite(summary["val_bpc"])
    model = gentext.load(run)
    text = model.generate("The ⊕ quick", max_new_tokens=20, seed=0)[0]  # unseen characters encode exactly
    assert text.startswith("The ⊕ quick")
    result = model.evaluate(text="The quick brown fox.")
    assert result["characters"] == len("The quick brown fox.") - len(
        model.tokenizer.decode(model.tokenizer.encode("The quick brown fox.")[:1])
    )


NAMES = ["Alice", "Bob", "Carol", "Dave", "Eve", "Mallory", "Trent", "Peggy", "Victor", "Walter"]


@pytest.mark.parametrize("level", ["char", "word"])
def test_lines_mode_samples_are_single_lines_that_end_by_themselves(tmp_path, level):
    path = tmp_path / "names.txt"
    path.write_text("\n\n".join(NAMES * 20) + "\n")  # blank lines are not documents
    run = tmp_path / "names"
    gentext.train(
        run,
        paths=[str(path)],
        corpus=CorpusConfig(mode="lines"),
        tokenizer=TokenizerConfig(level=level),
        model=ModelConfig(kind="markov", order=4),
    )
    model = gentext.load(run)
    assert model.end_id is not None
    samples = model.generate("", max_new_tokens=200, num_samples=16, seed=0)
    assert all("\n" not in s and len(s) < 40 for s in samples)  # each ended by itself, well before 200
    assert sum(s in NAMES for s in samples) >= 4  # smoothing invents some names, but many are real
    start = "Ca" if level == "char" else "Carol"  # a word model cannot complete half a word
    assert model.generate(start, max_new_tokens=200, temperature=0)[0] == "Carol"
    beams = model.generate("", max_new_tokens=200, num_beams=3, num_samples=2)
    assert all("\n" not in b for b in beams) and beams == model.generate(
        "", max_new_tokens=200, num_beams=3, num_samples=2
    )
    streamed = "".join(model.stream(start, max_new_tokens=200, temperature=0))
    assert streamed == "Carol"


def test_stream_mode_runs_to_max_new_tokens(trained_run):
    model = gentext.load(trained_run)
    assert model.end_id is None
    assert len(model.generate("The", max_new_tokens=50, seed=0)[0]) == 53
