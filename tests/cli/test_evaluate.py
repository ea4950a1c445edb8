"""`eval`, `compare` and `chat`, with and without `--json`, on every language-model kind (issue 25;
seq2seq and captioning have theirs in test_seq2seq.py and test_captions.py, the pretrained kind in
test_pretrained.py)."""

import io
import json
import re

import pytest

import gentext
from gentext.cli import main
from tests.conftest import TINY_SETTINGS

KINDS = {
    "lstm": dict(kind="lstm", steps=10),
    "gru": dict(kind="gru", steps=10),
    "rnn": dict(kind="rnn", steps=10),
    "mingru": dict(kind="mingru", steps=10),
    "transformer": dict(kind="transformer", num_heads=2, context=16, steps=10),
    "markov": dict(kind="markov", order=3),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(KINDS))
def test_eval_compare_and_chat_on_every_kind(name, tiny_corpus, tmp_path, capsys, monkeypatch):
    run = str(tmp_path / name)
    gentext.train(run, paths=[str(tiny_corpus)], **{**TINY_SETTINGS, **KINDS[name]})
    assert main(["eval", run]) == 0
    assert re.search(r"^loss \d+\.\d+ nats/token", capsys.readouterr().out, re.M)
    assert main(["eval", run, "--json"]) == 0
    scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores["loss"] > 0 and scores["bpc"] > 0
    assert main(["compare", run, run]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| run | kind |") and len(table) == 4
    assert main(["compare", run, "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"][0]["loss"] == pytest.approx(
        scores["loss"], rel=1e-6
    )
    monkeypatch.setattr("sys.stdin", io.StringIO("/max_new_tokens 8\n/temperature 0\nThe \n"))
    assert main(["chat", run]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = gentext.load(run).generate("The ", max_new_tokens=8, temperature=0)[0]
    assert lines[:2] == ["max_new_tokens = 8", "temperature = 0.0"] and lines[2] == expected


def test_condition_marks_are_tokens_of_their_own_at_every_word_setting():
    from gentext.data.conditions import SOURCE_END, mark
    from gentext.data.tokenizers import WordTokenizer

    text = f"{mark(0)}the cat\nle chien{SOURCE_END}the dog\n"
    for tokenize in ("regex", "whitespace"):
        tok = WordTokenizer.fit(text, tokenize=tokenize)
        assert tok.split(text)[:3] == [mark(0), "the", "cat"]
        assert SOURCE_END in tok.split(text) and "chien" in tok.split(text)
        ids = tok.encode(f"{SOURCE_END}the dog").tolist()
        decoder = tok.decoder()
        assert "".join(decoder.step(i) for i in ids)[1:] == "the dog"  # no space after the start token


def test_a_pair_corpus_without_pairs_fails_before_anything_is_written(tmp_path, capsys):
    text = tmp_path / "notpairs.txt"
    text.write_text("no tabs here\nnor here\n" * 20, encoding="utf-8")
    out = tmp_path / "run"
    code = main(["train", str(text), "--condition", "source", "--level", "word", "--out", str(out), "--steps", "2"])
    assert code == 2 and not out.exists()


def test_a_tokenizer_flag_with_pictures_is_refused_naming_it(tmp_path, capsys):
    code = main(["train", str(tmp_path), "--condition", "image", "--level", "bpe", "--out", str(tmp_path / "r")])
    assert code == 2 and "drop --level" in capsys.readouterr().err
