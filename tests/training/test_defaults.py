"""Defaults that fit the corpus: the kind and the dropout from how often the run reads the text, the
weight decay from its vocabulary."""

import json
import logging

import pytest

import gentext
from gentext.config import DEFAULT_WIDTH, CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.errors import GentextError
from gentext.models import build_model
from gentext.settings import new_configs
from gentext.training.defaults import (
    AUTO_MINGRU_PASSES,
    DISTILL,
    DISTILL_FEW,
    LEARNING_RATE,
    LSTM_LEARNING_RATE,
    TAUGHT_LEARNING_RATE,
    WEIGHT_DECAY,
    WIDE,
    auto_dropout,
    auto_kind,
    auto_learning_rate,
    auto_weight_decay,
    auto_width,
    planned_passes,
)
from tests.conftest import TINY_SETTINGS

WITHOUT_WIDTH = {k: v for k, v in TINY_SETTINGS.items() if k != "hidden_size"}


def test_passes_come_from_steps_epochs_or_an_estimated_speed():
    model = ModelConfig(kind="lstm", vocab_size=65)
    assert planned_passes(10_000, model, TrainConfig(steps=100, batch_size=10, seq_len=10)) == 1.0
    assert planned_passes(10_000, model, TrainConfig(epochs=3.5)) == 3.5
    assert planned_passes(10_000, model, TrainConfig()) == 2000 * 16 * 64 / 10_000  # the default 2000 steps
    short, long = (planned_passes(10_000, model, TrainConfig(time_limit=t)) for t in (60, 600))
    assert long == pytest.approx(10 * short)
    big = ModelConfig(kind="lstm", vocab_size=65, hidden_size=1024)
    assert planned_passes(10_000, big, TrainConfig(time_limit=60)) < short  # a bigger model reads less per minute


def test_a_book_read_fifty_times_gets_dropout_and_a_big_corpus_read_twice_none():
    model = ModelConfig(kind="lstm", vocab_size=65)
    book = auto_dropout(90_000, model, TrainConfig(epochs=50))
    assert 0.25 <= book <= 0.4
    assert auto_dropout(10_000_000, model, TrainConfig(epochs=2)) == 0.0
    values = [auto_dropout(90_000, model, TrainConfig(epochs=e)) for e in (1, 4, 16, 64, 1000)]
    assert values == sorted(values) and values[-1] == 0.4


@pytest.mark.slow
def test_training_records_the_chosen_dropout_and_a_given_one_wins(tiny_corpus, tmp_path):
    settings = {**TINY_SETTINGS, "eval_every": 100}
    gentext.train(tmp_path / "auto", paths=[str(tiny_corpus)], steps=200, **settings)
    chosen = json.loads((tmp_path / "auto" / "config.json").read_text())["model"]["dropout"]
    train_tokens = len(tiny_corpus.read_text()) * 9 // 10
    passes = 200 * TINY_SETTINGS["batch_size"] * TINY_SETTINGS["seq_len"] / train_tokens
    assert passes > 2 and chosen > 0
    assert gentext.load(tmp_path / "auto").model.drop.p == chosen
    gentext.train(tmp_path / "given", paths=[str(tiny_corpus)], steps=5, dropout=0.05, **TINY_SETTINGS)
    assert json.loads((tmp_path / "given" / "config.json").read_text())["model"]["dropout"] == 0.05


def test_auto_picks_a_mingru_for_a_few_passes_over_characters_and_an_lstm_beyond():
    model = ModelConfig(vocab_size=65)  # kind "auto"
    few, many = TrainConfig(epochs=AUTO_MINGRU_PASSES / 2), TrainConfig(epochs=AUTO_MINGRU_PASSES * 2)
    assert auto_kind(1_000_000, "char", model, few) == "mingru"
    assert auto_kind(1_000_000, "char", model, many) == "lstm"
    assert auto_kind(1_000_000, "word", model, few) == "lstm"  # words and subwords: the LSTM's recipe
    adaptive = ModelConfig(vocab_size=65, adaptive_cutoffs=[20])
    assert auto_kind(1_000_000, "char", adaptive, few) == "lstm"  # a mingru has no adaptive softmax
    budget = [auto_kind(1_000_000, "char", model, TrainConfig(time_limit=t)) for t in (60, 6000)]
    assert budget == ["mingru", "lstm"]  # the same text: a minute, then a long run
    with pytest.raises(GentextError, match="chosen when a training starts"):
        build_model(ModelConfig(vocab_size=65))


@pytest.mark.slow
def test_a_default_run_records_the_kind_it_chose(tiny_corpus, tmp_path):
    settings = {k: v for k, v in TINY_SETTINGS.items() if k != "kind"}
    gentext.train(tmp_path / "few", paths=[str(tiny_corpus)], steps=5, **settings)
    assert json.loads((tmp_path / "few" / "config.json").read_text())["model"]["kind"] == "mingru"
    assert gentext.load(tmp_path / "few").generate("The", max_new_tokens=5, seed=0)
    many = {**settings, "batch_size": 32, "seq_len": 32}  # 25 steps read the text about five times
    gentext.train(tmp_path / "many", paths=[str(tiny_corpus)], steps=25, **many)
    assert json.loads((tmp_path / "many" / "config.json").read_text())["model"]["kind"] == "lstm"


def test_weight_decay_is_chosen_from_the_tokens_and_the_optimizer():
    common, rare = auto_weight_decay(False, TrainConfig()), auto_weight_decay(True, TrainConfig())
    assert common > rare > 0  # a rare token's rows would shrink under every step's decay
    assert auto_weight_decay(False, TrainConfig(optimizer="sgd")) == 0.0  # L2 under SGD: only when asked


@pytest.mark.slow
def test_a_run_records_the_weight_decay_it_chose_and_a_resume_keeps_it(tiny_corpus, tmp_path):
    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=5, **TINY_SETTINGS)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["weight_decay"] == auto_weight_decay(False, TrainConfig())  # plain characters
    config["train"]["weight_decay"] = None  # a run saved before the choice was recorded
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    gentext.train(tmp_path / "run", resume=True, steps=10)
    resumed = json.loads((tmp_path / "run" / "config.json").read_text())["train"]["weight_decay"]
    assert resumed == WEIGHT_DECAY  # what None trained with then, at every level


def test_a_character_lstm_on_a_time_limit_is_wide_where_it_reads_its_text_a_few_times():
    lstm = ModelConfig(kind="lstm", vocab_size=65)  # --hidden-size not given
    ten_minutes, three = TrainConfig(time_limit=600), TrainConfig(time_limit=180)
    assert auto_width(1_000_000, lstm, ten_minutes) == WIDE  # Tiny Shakespeare in 10 minutes
    assert auto_width(80_000, lstm, three) == DEFAULT_WIDTH  # a 100 KB text read many times
    assert auto_width(1_000_000, ModelConfig(kind="mingru", vocab_size=65), ten_minutes) == DEFAULT_WIDTH


@pytest.mark.parametrize(
    "settings, chosen",
    [
        (dict(time_limit=600), True),
        (dict(time_limit=600, kind="lstm"), True),
        (dict(), False),  # no time limit: the step count's default width
        (dict(time_limit=600, level="word"), False),
        (dict(time_limit=600, kind="transformer"), False),
        (dict(time_limit=600, tie_weights=True, embed_size=256), False),
        (dict(time_limit=600, hidden_size=512), False),  # given
    ],
)
def test_the_width_is_left_to_choose_only_where_it_was_measured(settings, chosen):
    corpus, _, model, train, _ = new_configs(["book.txt"], CorpusConfig(), TokenizerConfig(), None, None, settings)
    assert (model.hidden_size is None) == chosen
    if not chosen and "hidden_size" not in settings:
        assert model.hidden_size == DEFAULT_WIDTH
    if chosen or settings.get("hidden_size"):  # measured there: chosen with the kind and width, given or not
        assert train.learning_rate is None
    else:
        assert train.learning_rate == LEARNING_RATE


def test_a_learning_rate_given_is_kept_where_the_width_is_chosen():
    settings = dict(time_limit=600, learning_rate=1e-3)
    _, _, model, train, _ = new_configs(["book.txt"], CorpusConfig(), TokenizerConfig(), None, None, settings)
    assert model.hidden_size is None and train.learning_rate == 1e-3


def test_an_lstm_of_a_measured_width_on_a_time_limit_gets_the_higher_learning_rate():
    wide, narrow, other = (ModelConfig(kind="lstm", vocab_size=65, hidden_size=h) for h in (WIDE, DEFAULT_WIDTH, 384))
    assert auto_learning_rate(wide) == auto_learning_rate(narrow) == LSTM_LEARNING_RATE > LEARNING_RATE
    assert auto_learning_rate(other) == LEARNING_RATE  # a width not measured at another rate
    assert auto_learning_rate(ModelConfig(kind="mingru", vocab_size=65, hidden_size=DEFAULT_WIDTH)) == LEARNING_RATE


def test_a_narrow_lstm_taught_by_a_chain_gets_the_rate_measured_taught(caplog):
    wide, narrow = (ModelConfig(kind="lstm", vocab_size=65, hidden_size=h) for h in (WIDE, DEFAULT_WIDTH))
    with caplog.at_level(logging.INFO, logger="gentext.training.defaults"):
        assert auto_learning_rate(narrow, DISTILL) == TAUGHT_LEARNING_RATE > LSTM_LEARNING_RATE
        assert auto_learning_rate(wide, DISTILL) == LSTM_LEARNING_RATE  # not measured taught
        assert auto_learning_rate(narrow, DISTILL_FEW) == LSTM_LEARNING_RATE  # not measured taught so lightly
    said = [r.getMessage() for r in caplog.records]
    assert "taught by a chain" in said[0] and "taught" not in said[1] + said[2]  # the log gives the rate's reason
    mingru = ModelConfig(kind="mingru", vocab_size=65, hidden_size=DEFAULT_WIDTH)
    assert auto_learning_rate(mingru, DISTILL) == LEARNING_RATE


@pytest.mark.slow
def test_a_run_records_the_learning_rate_chosen_with_its_width(tiny_corpus, tmp_path):
    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], time_limit=3, **WITHOUT_WIDTH)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    chosen = ModelConfig(kind="lstm", vocab_size=65, hidden_size=config["model"]["hidden_size"])
    chosen_rate = auto_learning_rate(chosen, config["train"]["distill"])
    assert config["train"]["learning_rate"] == chosen_rate  # recorded, never None
