import math

from gentext.config import TrainConfig
from gentext.training.trainer import lr_at


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
