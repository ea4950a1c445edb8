"""Conditions as objects: the registry, and a condition added inside a test (one class and one
registry line) that every stage then asks: settings, corpus, hold-out, prompt, evaluation, CLI."""

import dataclasses
import json
from dataclasses import FrozenInstanceError

import pytest

import gentext
from gentext.cli import main
from gentext.conditions import CONDITIONS, Condition, condition_for, condition_of
from gentext.config import CorpusConfig
from gentext.errors import GentextError
from gentext.runconfig import CacheRecord, MixRecord, RunConfig, TrainSummary
from tests.conftest import TINY_SETTINGS


class Shouted(Condition):
    """Every line a document, read in capitals; prompts and evaluated texts are read in capitals too."""

    name = "shout"
    reads = "lines of text, read in capitals"
    documents = True

    def shape(self, pieces, config, labels):
        return (piece.upper() for piece in super().shape(pieces, config, labels))

    def prompt(self, model, prompt, label=None, source=None, image=None):
        return super().prompt(model, prompt.upper(), label, source, image)

    def evaluate(self, model, paths, text, **options):
        result = super().evaluate(model, paths, None if text is None else text.upper(), **options)
        return {**result, "shouted_lines": len(self.read(model, paths, text).splitlines())}

    def summary_lines(self, result):
        return [f"read in capitals: {result['shouted_lines']} lines"]


@pytest.fixture
def shouted(monkeypatch):
    monkeypatch.setitem(CONDITIONS, Shouted.name, Shouted)


def test_an_unknown_condition_names_the_known_ones():
    with pytest.raises(GentextError, match="--condition must be one of none, label, source, image, got 'x'"):
        condition_for(CorpusConfig(condition="x"))


def test_a_condition_sets_what_it_needs_and_refuses_what_it_cannot_take():
    lines = CorpusConfig(condition="label")
    assert condition_for(lines).labels == [] and lines.mode == "lines"
    with pytest.raises(GentextError, match="--label-column needs --condition label"):
        condition_for(CorpusConfig(label_column="a", text_column="b"))
    with pytest.raises(GentextError, match="reads captions as words itself; drop --level"):
        condition_for(CorpusConfig(condition="image"), ["--level"])
    saved = condition_of(RunConfig(corpus=CorpusConfig(condition="label"), labels=("a", "b")))
    assert saved.labels == ["a", "b"] and saved.takes == "label"


@pytest.mark.slow
def test_a_condition_added_with_a_class_and_a_registry_line_does_everything(shouted, tiny_corpus, tmp_path, capsys):
    run = tmp_path / "shout"
    gentext.train(run, paths=[str(tiny_corpus)], steps=10, condition="shout", **TINY_SETTINGS)
    config = json.loads((run / "config.json").read_text())
    assert config["corpus"]["mode"] == "lines"  # documents: a line ends, and the next starts afresh
    model = gentext.load(run)
    assert isinstance(model.condition, Shouted)
    held = model.held_out_text()
    lines = [line for line in tiny_corpus.read_text().splitlines() if line.strip()]
    assert held == held.upper() and len(held.splitlines()) == len(lines) // 10  # every 10th document
    # a lower-case prompt is read in capitals (the run's vocabulary has no lower case)
    text = model.generate("the", max_new_tokens=8, seed=0)[0]
    assert text.startswith("the") and text[3:] == text[3:].upper()
    with pytest.raises(GentextError, match="never seen"):
        model.tokenizer.encode("the")  # what a plain condition would have refused
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert "bits/char" in out and f"read in capitals: {len(held.splitlines())} lines" in out


def test_a_run_record_survives_json_and_refuses_what_it_does_not_know():
    record = RunConfig(
        corpus=CorpusConfig(condition="label", mode="lines"),
        sources=("a.tsv",),
        labels=("soft", "hard"),
        mixture=MixRecord(order=7, weight=0.25, labels=2),
        cache=CacheRecord(window=100, theta=0.3, weight=0.1),
        result=TrainSummary(steps=3, train_loss=1.4, val_loss=1.5, out="runs/x"),
    )
    saved = record.to_json()
    assert saved["corpus"]["sources"] == ["a.tsv"] and saved["mixture"] == {"order": 7, "weight": 0.25, "labels": 2}
    assert "out" not in saved["result"] and saved["result"]["val_loss"] == 1.5
    loaded = RunConfig.from_json(json.loads(json.dumps(saved)))
    assert loaded == dataclasses.replace(record, result=dataclasses.replace(record.result, out=None))
    with pytest.raises(GentextError, match=r"unknown keys \['later'\]"):
        RunConfig.from_json({**saved, "later": 1})
    with pytest.raises(FrozenInstanceError):
        record.labels = ()  # a stage that adds to a record makes a new one
    # a captioner saved before the condition lived only in corpus.condition still loads
    old = {**saved, "condition": "image", "corpus": {**saved["corpus"], "condition": "image"}}
    assert condition_of(RunConfig.from_json(old)).takes == "image"
