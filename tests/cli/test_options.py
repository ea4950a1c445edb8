"""Training options through the command line: presets, the schedule's end, the softmax's cutoffs."""

import json

import pytest

from gentext import checkpoint
from tests.cli.test_cli import run_cli
from tests.conftest import TINY_FLAGS


@pytest.mark.slow
def test_preset_supplies_defaults_and_explicit_flags_win(capsys, tiny_corpus, tmp_path):
    run = tmp_path / "preset"
    code, _, err = run_cli(
        capsys,
        "train",
        tiny_corpus,
        "--out",
        run,
        "--preset",
        "shakespeare-cpu",
        "--hidden-size",
        "32",
        "--embed-size",
        "16",
        "--num-layers",
        "1",
        "--steps",
        "2",
        "--quiet",
    )
    assert code == 0, err
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["hidden_size"] == 32  # given explicitly
    assert (config["train"]["batch_size"], config["train"]["seq_len"], config["train"]["time_limit"]) == (16, 64, 600.0)


def test_ptb_preset_is_the_recorded_word_level_recipe():
    from gentext.cli import build_parser
    from gentext.cli.train import train_options

    argv = ["train", "ptb.train.txt", "--out", "r", "--preset", "ptb-cpu", "--dropout", "0.3", "--batch=16"]
    options = train_options(build_parser().parse_args(argv))
    assert (options["level"], options["tokenize"], options["tie_weights"]) == ("word", "whitespace", True)
    assert (options["optimizer"], options["learning_rate"], options["grad_clip"]) == ("sgd", 20.0, 0.25)
    assert options["adaptive_cutoffs"] == [2000, 6000] and options["time_limit"] == 900.0
    assert (options["state_reset"], options["dropout"]) == (0.0, 0.3)  # an explicit flag wins over the preset
    assert options["batch_size"] == 16  # even when it is the flag's default value


@pytest.mark.slow
def test_min_lr_ratio_sets_where_the_schedule_ends(capsys, tiny_corpus, tmp_path):
    run = tmp_path / "r"
    flags = [*TINY_FLAGS, "--steps", "21", "--warmup-steps", "0", "--lr", "0.01", "--quiet"]
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", run, *flags, "--min-lr-ratio", "0.5")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["train"]["min_lr_ratio"] == 0.5
    rates = [r["lr"] for r in checkpoint.read_metrics(run) if "lr" in r]
    assert rates[0] == 0.01 and 0.005 < rates[-1] < 0.0052  # cosine from 0.01 down towards 0.005
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", run, "--force", "--min-lr-ratio", "2")
    assert code == 2 and "--min-lr-ratio must be in [0, 1], got 2.0" in err


def test_bad_adaptive_softmax_cutoffs_are_usage_errors(capsys, tiny_corpus, tmp_path):
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", tmp_path / "r", "--adaptive-softmax", "10,x")
    assert code == 2 and "invalid cutoffs '10,x'" in err
    code, _, err = run_cli(
        capsys, "train", tiny_corpus, "--out", tmp_path / "r", "--level", "word", "--adaptive-softmax", "5,99999"
    )
    assert code == 2 and "--adaptive-softmax cutoffs must increase" in err


@pytest.mark.parametrize("flag", ["--eval-every", "--save-every"])
def test_intervals_must_be_positive(capsys, tiny_corpus, tmp_path, flag):
    code, _, err = run_cli(capsys, "train", tiny_corpus, "--out", tmp_path / "r", flag, "0")
    assert code == 2 and f"{flag} must be positive, got 0" in err
    assert not (tmp_path / "r").exists()  # refused before anything was written
