"""The weights' moving average (training/averaging.py): what it keeps, and that a run validates and keeps it."""

import pytest
import safetensors.torch
import torch
from torch import nn

import gentext
from gentext.config import CorpusConfig, TokenizerConfig
from gentext.settings import new_configs
from gentext.training.averaging import WEIGHT_AVERAGE, averaged
from gentext.training.train_state import TRAIN_STATE
from tests.conftest import TINY_SETTINGS


def test_the_average_forgets_the_start_then_moves_by_one_minus_the_decay():
    model = nn.Linear(2, 1, bias=False)
    average, expected = averaged(model, 0.9), None
    for n, value in enumerate([1.0, 3.0, -2.0, 5.0, 0.5, 4.0]):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update_parameters(model)
        if expected is None:  # the first update copies the weights
            expected = value
        else:
            kept = min(0.9, (1 + n) / (10 + n))
            expected = kept * expected + (1 - kept) * value
        assert torch.allclose(average.module.weight, torch.full((1, 2), expected))
    assert averaged(model, 0.0) is None


@pytest.mark.parametrize(
    "settings, decay",
    [
        (dict(time_limit=600), WEIGHT_AVERAGE),  # the default command: where it was measured
        (dict(time_limit=600, hidden_size=512), WEIGHT_AVERAGE),
        (dict(), 0.0),  # a step count
        (dict(time_limit=600, level="word"), 0.0),
        (dict(time_limit=600, kind="transformer"), 0.0),
        (dict(time_limit=600, weight_average=0.99), 0.99),  # given
    ],
)
def test_the_average_is_on_by_default_only_where_it_was_measured(settings, decay):
    _, _, _, train, _ = new_configs(["book.txt"], CorpusConfig(), TokenizerConfig(), None, None, settings)
    assert train.weight_average == decay


def test_a_run_validates_and_keeps_the_average_not_the_last_steps_weights(tiny_corpus, tmp_path):
    settings = {**TINY_SETTINGS, "steps": 12, "eval_every": 12, "save_every": 12, "weight_average": 0.9}
    gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], **settings)
    kept = safetensors.torch.load_file(str(tmp_path / "run" / "model.safetensors"))
    state = safetensors.torch.load_file(str(tmp_path / "run" / TRAIN_STATE))
    assert all(torch.equal(kept[k], state[f"average.module.{k}"]) for k in kept)
    assert not all(torch.equal(kept[k], state[f"model.{k}"]) for k in kept)  # the last step's weights differ
