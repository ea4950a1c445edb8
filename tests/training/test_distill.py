"""A Kneser-Ney chain as a teacher (--distill): each part of the text is taught by a chain that never
saw it, the loss mixes the targets with the teacher's distributions, and the default chooses it only
where it was measured."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gentext
from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.data.dataset import BPTTBatches
from gentext.errors import GentextError
from gentext.models.markov import MarkovModel
from gentext.settings import new_configs
from gentext.training import distill
from gentext.training.defaults import DISTILL, DISTILL_FEW, auto_distill
from gentext.training.feeds import WindowFeed
from tests.conftest import TINY_SETTINGS, reversals

A, B, C, D, E = range(5)


def _abcd_with_a_fold_of_abce(n=4000):
    """abcd repeated, except that the third fifth of the text says abce."""
    ids = np.tile([A, B, C, D], n // 4)
    lo, hi = 2 * n // 5, 3 * n // 5
    part = ids[lo:hi]
    part[part == D] = E
    return ids, range(lo + 8, hi - 8)


def test_each_part_is_taught_by_a_chain_that_never_saw_it():
    ids, odd = _abcd_with_a_fold_of_abce()
    table = distill.teacher(ids, 5).float()
    after_c = np.flatnonzero(np.roll(ids, 1) == C)[1:]  # positions right after a c
    inside = [i for i in after_c if i in odd]
    outside = [i for i in after_c if i not in odd and not (odd.start - 16 < i < odd.stop + 16)]
    assert table[inside, E].max() < 0.1 and table[inside, D].min() > 0.8  # the other parts never say abce
    assert table[outside, D].min() > 0.9
    whole = MarkovModel(ModelConfig(kind="markov", vocab_size=5, order=distill.ORDER)).fit(ids)
    with torch.no_grad():
        seen, _ = whole(torch.from_numpy(ids[: inside[0]])[None], None)
    assert seen[0, -1, E].exp() > 0.9  # a chain fitted on everything would give the target away
    assert torch.allclose(table.sum(1), torch.ones(len(ids)), atol=1e-2)
    assert torch.allclose(table[0], torch.full((5,), 0.2), atol=1e-3)  # nothing before the first token


def test_the_teacher_reads_long_parts_in_chunks_with_its_context_carried(monkeypatch):
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 7, 3000)
    whole = distill.teacher(ids, 7)
    monkeypatch.setattr(distill, "CHUNK", 97)
    assert torch.equal(distill.teacher(ids, 7), whole)


def test_the_loss_mixes_the_targets_with_the_teachers_distributions():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    targets = torch.randint(0, 7, (2, 5))
    uniform = torch.full((2, 5, 7), 1 / 7)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss, own = distill.loss(logits, targets, uniform, 0.0)
    assert torch.allclose(loss, nll) and torch.allclose(own, nll)
    loss, own = distill.loss(logits, targets, F.one_hot(targets, 7).float(), 0.7)
    assert torch.allclose(loss, nll) and torch.allclose(own, nll)  # a teacher that knows the answer
    loss, own = distill.loss(logits, targets, uniform, 0.5)
    spread = -torch.log_softmax(logits, -1).mean(-1).mean()
    assert torch.allclose(loss, 0.5 * nll + 0.5 * spread) and torch.allclose(own, nll)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_a_window_carries_the_teachers_rows_of_its_targets():
    ids = np.random.default_rng(1).integers(0, 9, 5000)
    config = TrainConfig(batch_size=4, seq_len=16)
    feed = WindowFeed(ids, None, config, range(1, 3), teacher=F.one_hot(torch.from_numpy(ids), 9).half())
    for step in (0, 7, feed.steps_per_epoch + 3):
        batch = feed.batch(step)
        assert batch.taught.shape == (2, 16, 9)
        assert torch.equal(batch.taught.argmax(-1), batch.targets)
    assert WindowFeed(ids, None, config, range(4)).batch(0).taught is None
    assert BPTTBatches(ids, 4, 16).target_positions(2)[3, 0] == 3 * (5000 // 4) + 2 * 16 + 1


def test_distill_is_chosen_by_the_passes_and_a_big_table_is_refused():
    lstm = ModelConfig(kind="lstm", vocab_size=65, hidden_size=256)
    three = TrainConfig(time_limit=180)
    assert auto_distill(80_000, 65, lstm, three) == DISTILL  # a 100 KB text in three minutes
    wide = ModelConfig(kind="lstm", vocab_size=65, hidden_size=512)
    assert auto_distill(1_000_000, 65, wide, TrainConfig(time_limit=600)) == DISTILL_FEW  # a book read a few times
    assert auto_distill(2_000_000, 169, wide, TrainConfig(time_limit=600)) == 0.0  # read about twice
    assert auto_distill(5_000_000, 65, wide, TrainConfig(time_limit=600)) == 0.0  # a corpus read about once
    assert auto_distill(80_000, 10**7, lstm, three) == 0.0  # the table would not fit
    with pytest.raises(GentextError, match="GiB table"):
        distill.check(True, 80_000, 10**7)
    with pytest.raises(GentextError, match="one stream of text"):
        distill.check(False, 0, 65)


@pytest.mark.parametrize(
    "settings, chosen",
    [(dict(time_limit=180), True), (dict(steps=100), False), (dict(time_limit=180, distill=0.3), False)],
)
def test_distill_is_left_to_choose_only_where_it_was_measured(settings, chosen):
    _, _, _, train, _ = new_configs(["book.txt"], CorpusConfig(), TokenizerConfig(), None, None, settings)
    assert (train.distill is None) == chosen
    if not chosen:
        assert train.distill == settings.get("distill", 0.0)


def test_a_run_taught_by_a_chain_trains_and_records_its_weight(tiny_corpus, tmp_path):
    summary = gentext.train(tmp_path / "run", paths=[str(tiny_corpus)], steps=12, distill=0.5, **TINY_SETTINGS)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["train"]["distill"] == 0.5
    assert np.isfinite(summary["val_loss"]) and 0 < summary["train_loss"] < np.log(config["model"]["vocab_size"]) + 1
    gentext.train(tmp_path / "run", resume=True, steps=16)  # the teacher is made again from the text
    assert json.loads((tmp_path / "run" / "config.json").read_text())["result"]["steps"] == 16


@pytest.mark.parametrize("settings", [dict(condition="source", kind="seq2seq"), dict(kind="markov")])
def test_distill_is_refused_where_no_network_reads_one_stream(tmp_path, tiny_corpus, settings):
    path = reversals(tmp_path / "pairs.tsv") if settings.get("condition") else tiny_corpus
    with pytest.raises(GentextError, match="--distill teaches"):
        gentext.train(tmp_path / "run", paths=[str(path)], steps=3, distill=0.5, **{**TINY_SETTINGS, **settings})
    assert not (tmp_path / "run").exists()
