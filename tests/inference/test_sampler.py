import math

import pytest
import torch

from gentext.inference.processors import (
    History,
    apply_min_p,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)
from gentext.inference.sampler import Sampler, choose_next, make_generator
from gentext.useconfig import SampleConfig
from tests.conftest import HARD_ROWS


def process_logits(logits, config, history=None, suppress=None):
    """Every processor the settings ask for, in order (what a request's sampler applies)."""
    return Sampler(config, suppress).process(logits, None if history is None else History(history))


def test_neutral_values_are_identity_and_inputs_not_mutated():
    logits = torch.randn(3, 10)
    before = logits.clone()
    for out in (
        apply_temperature(logits, 1.0),
        apply_top_k(logits, 0),
        apply_top_k(logits, 10),
        apply_top_p(logits, 1.0),
    ):
        assert torch.equal(out, before)
    apply_temperature(logits, 0.5), apply_top_k(logits, 3), apply_top_p(logits, 0.5)
    assert torch.equal(logits, before)


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0]])
    kept = torch.isfinite(apply_top_k(logits, 2))
    assert kept.sum().item() == 2
    assert kept[0, [1, 2, 3]].sum().item() == 2  # two of the three tied maxima


def test_top_p_keeps_smallest_set_reaching_p():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    out = apply_top_p(probs.log(), 0.75)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    out = apply_top_p(probs.log(), 0.8)  # 0.5 + 0.3 reaches 0.8 exactly: nothing more needed
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    assert torch.isfinite(apply_top_p(probs.log(), 1e-9)).tolist() == [[True, False, False, False]]


def test_temperature_zero_is_argmax():
    logits = torch.randn(4, 50)
    assert torch.equal(choose_next(logits, 0.0, None), logits.argmax(-1))


def test_softmax_stable_at_tiny_temperature_and_huge_logits():
    logits = torch.tensor([[1e4, 9.99e3, -1e4, 0.0]])
    cfg = SampleConfig(temperature=0.05)
    processed = process_logits(logits, cfg)
    probs = torch.softmax(processed, -1)
    assert torch.isfinite(probs).all()
    # The naive way overflows: this is the bug the sampler must not have.
    assert not torch.isfinite(torch.exp(logits / 0.05)).all()
    picks = choose_next(processed, 0.05, make_generator(0))
    assert picks.tolist() == [0]


def test_low_temperature_approaches_greedy():
    torch.manual_seed(0)
    logits = torch.randn(64, 30)
    sampled = choose_next(process_logits(logits, SampleConfig(temperature=1e-4)), 1e-4, make_generator(1))
    assert torch.equal(sampled, logits.argmax(-1))


def test_same_seed_same_sample_different_seed_differs():
    logits = torch.zeros(1, 1000)
    a = [choose_next(logits, 1.0, g).item() for g in [make_generator(7)] * 5]
    b = [choose_next(logits, 1.0, g).item() for g in [make_generator(7)] * 5]
    c = [choose_next(logits, 1.0, g).item() for g in [make_generator(8)] * 5]
    assert a == b and a != c


@pytest.mark.parametrize("temperature", [0.5, 2.0])
def test_temperature_sharpens_or_flattens(temperature):
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    p1 = torch.softmax(logits, -1)[0, 0].item()
    pt = torch.softmax(apply_temperature(logits, temperature), -1)[0, 0].item()
    assert (pt > p1) == (temperature < 1)
    assert math.isclose(torch.softmax(apply_temperature(logits, temperature), -1).sum().item(), 1.0, rel_tol=1e-6)


def test_more_knobs_are_identity_at_neutral_values():
    logits, history = torch.randn(2, 9), torch.randint(0, 9, (2, 6))
    before = logits.clone()
    assert torch.equal(apply_repetition_penalty(logits, history, 1.0), before)
    assert torch.equal(apply_no_repeat_ngram(logits, history, 0), before)
    assert torch.equal(apply_min_p(logits, 0.0), before)
    assert torch.equal(process_logits(logits, SampleConfig(temperature=1.0), history), before)
    apply_repetition_penalty(logits, history, 2.0), apply_no_repeat_ngram(logits, history, 2), apply_min_p(logits, 0.5)
    assert torch.equal(logits, before)


def test_repetition_penalty_divides_positive_and_multiplies_negative_logits():
    logits = torch.tensor([[2.0, -1.0, 3.0, 0.5]])
    out = apply_repetition_penalty(logits, torch.tensor([[0, 1, 1]]), 2.0)
    assert out.tolist() == [[1.0, -2.0, 3.0, 0.5]]


def test_no_repeat_ngram_bans_the_token_that_would_repeat_an_ngram():
    history = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 0, 1]])
    out = apply_no_repeat_ngram(torch.zeros(2, 5), history, 3)
    # Row 0 ends with (1, 2), which was followed by 3 before: 3 is banned. Row 1's (0, 1) is new.
    assert torch.isinf(out).tolist() == [[False, False, False, True, False], [False] * 5]
    out = apply_no_repeat_ngram(torch.zeros(1, 5), torch.tensor([[4, 4]]), 2)
    assert torch.isinf(out[0]).tolist() == [False, False, False, False, True]


def test_min_p_keeps_tokens_near_the_top():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    assert torch.isfinite(apply_min_p(probs.log(), 0.25)).tolist() == [[True, True, True, False]]


class _Certain(torch.nn.Module):
    """A model sure of its text: 'a' (id 1) for five tokens, then the end (id 0). Ending early costs
    4.7 nats at each step, 'b' (id 2) 6.9: cheap junk that finishes while the right answer is still
    growing."""

    def initial_state(self, batch, device=None, condition=None):
        from gentext.models.state import State

        return State({"read": torch.zeros(batch, dtype=torch.long)}, {"read": 0})

    def forward(self, ids, state=None, targets=None):
        from gentext.models.state import State

        state = state if state is not None else self.initial_state(ids.shape[0])
        read = state.tensors["read"][:, None] + torch.arange(1, ids.shape[1] + 1)  # (B, T)
        early = torch.tensor([0.009, 0.99, 0.001]).log()
        late = torch.tensor([0.999, 0.0005, 0.0005]).log()
        logits = torch.where((read < 6)[..., None], early, late)
        return logits, State({"read": read[:, -1]}, {"read": 0})


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_beams_find_the_answer_a_certain_model_gives_greedily(penalty):
    from types import SimpleNamespace

    from gentext.data.tokenizers import CharTokenizer
    from gentext.inference.engine import Engine
    from gentext.inference.jobs import Prompt
    from gentext.inference.results import Collector

    tokenizer = CharTokenizer(["\n", "a", "b"])
    certain = SimpleNamespace(model=_Certain(), tokenizer=tokenizer, end_id=0, suppressed=lambda config: [])
    config = SampleConfig(num_beams=4, num_samples=4, max_new_tokens=20, length_penalty=penalty)
    engine, collector = Engine(certain, max_rows=4), Collector()
    engine.submit(Prompt([1]), config, collector)
    engine.run_until_idle()
    assert collector.texts("")[0] == "aaaaa"  # what greedy decoding gives; before, a truncated "aaaa" won
    assert collector.end.reasons[0] == "stop" and collector.end.tokens[0] == 5


def _general(logits, config, generator, suppress):
    return choose_next(process_logits(logits, config, None, suppress), config.temperature, generator).tolist()


@pytest.mark.parametrize("temperature", [0.0, 0.05, 0.7, 1.0, 1.6])
@pytest.mark.parametrize("suppress", [None, [3]])
def test_the_plain_fast_path_picks_what_the_general_path_picks(temperature, suppress):
    """Same ids, draw for draw, on awkward rows alone and together, from the same seed."""
    config = SampleConfig(temperature=temperature)
    plain = Sampler(config, suppress)
    assert plain.plain
    cases = [torch.tensor([row]) for row in HARD_ROWS] + [torch.tensor(HARD_ROWS), torch.randn(7, 300) * 4]
    for logits in cases:
        fast_gen, general_gen = make_generator(11), make_generator(11)
        for _ in range(20):
            fast = plain.choose(logits, fast_gen)
            fast = fast if isinstance(fast, list) else fast.tolist()
            assert fast == _general(logits, config, general_gen, suppress)


def test_generation_ids_and_text_are_the_same_on_either_path(trained_run, monkeypatch):
    """A seed's text does not depend on which path sampled it."""
    import gentext

    model = gentext.load(trained_run)
    settings = [dict(temperature=t, num_samples=n, seed=3) for t in (0.0, 0.8, 1.0) for n in (1, 4)]
    fast = [model.generate("The", max_new_tokens=60, **s) for s in settings]
    general = Sampler.__init__

    def not_plain(self, *args, **kwargs):
        general(self, *args, **kwargs)
        self.plain = False

    monkeypatch.setattr(Sampler, "__init__", not_plain)
    assert [model.generate("The", max_new_tokens=60, **s) for s in settings] == fast


def test_presence_and_frequency_penalties_follow_openais_definition():
    from gentext.inference.processors import apply_presence_frequency

    logits, counts = torch.zeros(1, 4), torch.tensor([[0.0, 1.0, 3.0, 0.0]])
    out = apply_presence_frequency(logits, counts, presence=0.5, frequency=0.25)
    assert out.tolist() == [[0.0, -0.75, -1.25, 0.0]]
    history = History.start([2], rows=1, vocab=4, device="cpu").extend(torch.tensor([1])).extend(torch.tensor([1]))
    assert history.counts.tolist() == [[0.0, 2.0, 0.0, 0.0]] and history.ids.tolist() == [[2, 1, 1]]
