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
