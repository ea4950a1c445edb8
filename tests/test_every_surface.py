"""`eval`, `compare` and `chat`, with and without `--json`, on every language-model kind (issue 25;
seq2seq and captioning have theirs in test_seq2seq.py and test_captions.py, the pretrained kind in
test_pretrained.py)."""

import io
import json
import re

import pytest

import gentext
from gentext.cli import main

from .conftest import TINY_SETTINGS

KINDS = {
    "lstm": dict(kind="lstm", steps=10),
    "gru": dict(kind="gru", steps=10),
    "rnn": dict(kind="rnn", steps=10),
    "transformer": dict(kind="transformer", num_heads=2, context=16, steps=10),
    "markov": dict(kind="markov", order=3),
}


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
