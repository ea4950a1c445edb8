"""Dynamic evaluation (models/scoring.py evaluate_dynamic; issue 30): a separate figure from a
model whose weights adapt to the text as it reads it."""

import numpy as np
import pytest
import torch

import gentext
from gentext.cli import main
from gentext.models.scoring import DYNAMIC_SEGMENT
from tests.conftest import TINY_SETTINGS

# Names that recur through the text: a few steps of training cannot know them, reading can.
RNG = np.random.default_rng(5)
NAMES = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), 10)) for _ in range(30)]
TEXT = "".join(f"{name} came in. {name} went out.\n" for name in NAMES for _ in range(3))
FRESH = ["".join(RNG.choice(list("abcdefghijklmnopqrstuvwxyz"), 10)) for _ in range(8)]  # not in training


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("dynamic")
    (root / "t.txt").write_text(TEXT, encoding="utf-8")
    gentext.train(root / "net", paths=[str(root / "t.txt")], steps=30, **TINY_SETTINGS)
    mixed = {**TINY_SETTINGS, "mix_order": 3}  # the network inside a mixture with its chain
    gentext.train(root / "mixed", paths=[str(root / "t.txt")], steps=30, **mixed)
    gentext.train(root / "markov", paths=[str(root / "t.txt")], model="markov")
    return root


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.model.state_dict().items() if v.is_floating_point()}


@pytest.mark.slow
@pytest.mark.parametrize("run, gain", [("net", 0.05), ("mixed", 0.0)])  # mixed: the chain carries most of it
def test_dynamic_evaluation_learns_the_text_as_it_reads_and_puts_the_weights_back(runs, run, gain):
    model = gentext.load(runs / run)
    text = "".join(f"{name} came in. {name} went out.\n" for name in FRESH for _ in range(4))
    plain = model.evaluate(text=text)
    before = weights(model)
    result = model.evaluate(text=text, dynamic_lr=0.5)
    assert result["loss"] == pytest.approx(plain["loss"], abs=1e-9)  # the plain figure is untouched
    assert result["dynamic"]["loss"] < plain["loss"] - gain and result["dynamic"]["tokens"] == plain["tokens"]
    assert result["dynamic"]["bpc"] < plain["bpc"]
    after = weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the loaded model is as it was
    assert model.evaluate(text=text)["loss"] == pytest.approx(plain["loss"], abs=1e-9)


def test_a_segment_is_scored_before_the_weights_learn_from_it(runs):
    # one segment: nothing learnt has been scored yet, so the two figures are the same
    model = gentext.load(runs / "net")
    text = TEXT[: DYNAMIC_SEGMENT // 2]
    result = model.evaluate(text=text, dynamic_lr=5.0)
    assert result["dynamic"]["loss"] == pytest.approx(result["loss"], rel=1e-5)


def test_the_cli_prints_the_dynamic_figure_on_its_own_line_and_refuses_bad_uses(runs, tmp_path, capsys):
    held = tmp_path / "held.txt"
    held.write_text(TEXT[:600], encoding="utf-8")
    assert main(["eval", str(runs / "net"), str(held), "--dynamic-eval", "0.3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("loss ") and lines[1].startswith("dynamic evaluation (")
    for args, message in (
        ([str(runs / "net"), str(held), "--dynamic-eval", "0"], "learning rate > 0"),
        ([str(runs / "markov"), str(held), "--dynamic-eval", "0.1"], "a Markov chain has none"),
    ):
        assert main(["eval", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
