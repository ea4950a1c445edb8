import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from gentext import checkpoint
from gentext.config import TrainConfig
from gentext.training import trainer
from gentext.training.distributed import DistInfo
from gentext.training.trainer import lr_at
from tests.conftest import TINY_FLAGS


def test_schedule_warms_up_then_decays_to_the_floor():
    cfg = TrainConfig(learning_rate=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert math.isclose(lr_at(0, 0.0, cfg), 0.1)
    assert math.isclose(lr_at(9, 0.01, cfg), 1.0)
    assert math.isclose(lr_at(50, 0.0, cfg), 1.0)
    assert math.isclose(lr_at(50, 0.5, cfg), 0.55)
    assert math.isclose(lr_at(50, 1.0, cfg), 0.1)
    values = [lr_at(20, p / 10, cfg) for p in range(11)]
    assert values == sorted(values, reverse=True)


def test_periodic_validation_reads_a_fixed_sample_spread_over_the_whole_split(monkeypatch):
    import numpy as np
    import torch

    from gentext.config import ModelConfig
    from gentext.models import build_model
    from gentext.models import scoring as evaluation

    scored = []
    real = evaluation._score_rows
    monkeypatch.setattr(
        evaluation, "_score_rows", lambda m, ids, starts, *a: scored.append(starts) or real(m, ids, starts, *a)
    )
    model = build_model(ModelConfig(kind="lstm", vocab_size=7, embed_size=4, hidden_size=4, num_layers=1))
    row = evaluation.SAMPLE_ROW
    ids = np.random.default_rng(0).integers(0, 7, 40 * row + 1)
    device = torch.device("cpu")
    first = evaluation.evaluate_sample(model, ids, 64, device, tokens=8 * row)
    second = evaluation.evaluate_sample(model, ids, 64, device, tokens=8 * row)
    assert first == second and first[1] == 8 * row  # the same rows every time
    starts = scored[0]
    assert len(starts) == 8 and min(starts) >= evaluation.SAMPLE_WARM  # each row reads a warm-up first
    assert min(starts) < len(ids) / 8 and max(starts) > len(ids) * 6 / 8  # the whole split, not its first pages
    assert all(b - a >= row for a, b in zip(starts, starts[1:], strict=False))  # in order, no overlap
    short = ids[: 3 * evaluation.ROW_TOKENS]
    assert evaluation.evaluate_sample(model, short, 64, device, tokens=10**6) == evaluation.evaluate(
        model, short, 64, device
    )


def _validations(config: TrainConfig, seconds_each: float):
    """A schedule on a clock the test moves; each validation takes `seconds_each`."""
    clock = [0.0]
    run = SimpleNamespace(config=config, dist=DistInfo(), device=torch.device("cpu"))
    run.evaluate = lambda: clock.__setitem__(0, clock[0] + seconds_each)
    return trainer._Validations(run, clock=lambda: clock[0]), clock


def test_validations_on_a_time_limit_take_at_most_their_share_of_it():
    schedule, clock = _validations(TrainConfig(time_limit=600.0), seconds_each=1.0)
    assert schedule.due(trainer.EVAL_EVERY)  # the first one: nothing measured yet
    assert not schedule.due(trainer.EVAL_EVERY + 1)  # only at multiples of EVAL_EVERY
    schedule.evaluate()
    clock[0] += 0.5 / trainer.EVAL_SHARE  # half the training time one validation is worth
    assert not schedule.due(2 * trainer.EVAL_EVERY)
    clock[0] += 0.5 / trainer.EVAL_SHARE
    assert not schedule.due(3 * trainer.EVAL_EVERY + 1)
    assert schedule.due(3 * trainer.EVAL_EVERY)


def test_validations_keep_their_interval_where_it_is_given_or_the_budget_is_steps():
    for config in (TrainConfig(time_limit=600.0, eval_every=50), TrainConfig(steps=1000)):
        schedule, _ = _validations(config, seconds_each=100.0)
        every = config.eval_every or trainer.EVAL_EVERY
        for k in range(1, 4):
            assert schedule.due(k * every) and not schedule.due(k * every + 1)
            schedule.evaluate()


@pytest.mark.slow
def test_two_ranks_on_a_time_limit_validate_together(tiny_corpus, tmp_path):
    """The schedule that adapts asks every rank at each multiple of EVAL_EVERY (a collective): a
    run of two processes ends, and validates only at those steps and at its last."""
    given = TINY_FLAGS.index("--eval-every")
    flags = TINY_FLAGS[:given] + TINY_FLAGS[given + 2 :]  # not given: the schedule adapts
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", "-m", "gentext"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    done = subprocess.run(
        [*launch, "train", str(tiny_corpus), "--out", str(run), "--time-limit", "5s", *flags],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    steps = [r["step"] for r in checkpoint.read_metrics(run) if "val_loss" in r]
    last = max(r["step"] for r in checkpoint.read_metrics(run))
    assert steps and all(s % trainer.EVAL_EVERY == 0 or s == last for s in steps)
