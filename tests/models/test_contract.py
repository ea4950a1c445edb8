"""The model contract (models/__init__.py, models/state.py), checked for every kind, and a new kind
added in a test with nothing but a class and a registry line."""

import importlib.util
import json

import numpy as np
import pytest
import torch
from torch import nn

import gentext
from gentext.cli import main
from gentext.config import ModelConfig
from gentext.errors import GentextError
from gentext.models import REGISTRY, State, build_model
from tests.conftest import TINY_SETTINGS

VOCAB = 11
KINDS = {
    "lstm": dict(kind="lstm"),
    "gru": dict(kind="gru"),
    "rnn": dict(kind="rnn"),
    "mingru": dict(kind="mingru"),
    "markov": dict(kind="markov", order=3),
    "adaptive": dict(kind="lstm", adaptive_cutoffs=[4, 8]),
    "transformer": dict(kind="transformer", num_heads=2, context=6),
}
CONDITIONAL = {  # kinds that generate from a condition, and a batch of conditions for each
    "seq2seq": lambda b, g: torch.randint(1, VOCAB, (b, 5), generator=g),  # source ids (B, S)
    "captioner": lambda b, g: torch.rand((b, 3, 64, 64), generator=g) * 2 - 1,  # pictures
    "captioner-features": lambda b, g: torch.rand((b, 6), generator=g),  # a vision model's vectors
    "captioner-group": lambda b, g: torch.rand((b, 3, 64, 64), generator=g) * 2 - 1,  # --image-norm group
}
KINDS.update(
    {
        "seq2seq": dict(kind="seq2seq"),
        "captioner": dict(kind="captioner"),
        "captioner-group": dict(kind="captioner", image_norm="group"),
        "captioner-features": dict(kind="captioner", feature_size=6),
    }
)
# A network mixed with a Kneser-Ney chain (models/mixture.py): what a default run loads as.
# A labelled run's mixture has one chain per label (models/labelchain.py); ids 9 and 10 are its marks.
MIXED = {
    "mixture": dict(kind="lstm"),
    "mixture-transformer": dict(kind="transformer", num_heads=2, context=6),
    "mixture-mingru": dict(kind="mingru"),
    "mixture-labels": dict(kind="lstm"),
}
KINDS.update(MIXED)
# A recurrent network with its neural cache (models/cache.py), alone and inside a mixture; a window
# of 4 slots is shorter than the sequences here, so the cache's oldest slots drop out.
CACHED = {"cache": dict(kind="lstm"), "cache-mingru": dict(kind="mingru"), "cache-mixture": dict(kind="gru")}
KINDS.update(CACHED)
try:  # a pretrained (Hugging Face) model on the same contract, where the hf extra is installed
    from transformers import GPT2Config

    _gpt2 = GPT2Config(n_layer=2, n_head=2, n_embd=12, n_positions=6, vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    KINDS["pretrained"] = dict(kind="pretrained", num_heads=2, context=6, hf_config=_gpt2.to_dict())
except ImportError:
    pass


def make(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(ModelConfig(vocab_size=VOCAB, embed_size=8, hidden_size=12, num_layers=2, **KINDS[name]))
    if callable(getattr(model, "fit", None)):
        model.fit(np.random.default_rng(0).integers(0, VOCAB, 500))
    if name in CACHED:
        from gentext.models.cache import CacheModel

        model = CacheModel(model, window=4, theta=0.5, weight=0.3)
    if name in MIXED or name == "cache-mixture":
        from gentext.models.labelchain import LabelChain
        from gentext.models.markov import MarkovModel
        from gentext.models.mixture import MixtureModel

        chain = MarkovModel(ModelConfig(kind="markov", order=3, vocab_size=VOCAB))
        if name == "mixture-labels":
            chain = LabelChain(3, VOCAB, marks=[9, 10])
        model = MixtureModel(model, chain.fit(np.random.default_rng(1).integers(0, VOCAB, 500)), 0.6)
    model.test_name = name
    return model.eval()


def test_every_registered_kind_is_checked_here():
    missing = set(REGISTRY) - {spec["kind"] for spec in KINDS.values()}
    assert missing <= {"pretrained"} and ("pretrained" in KINDS or importlib.util.find_spec("transformers") is None)


def cold(model, batch: int, seed: int = 0):
    """Where a call starts: the model's own start (None), or the state a condition makes."""
    make_condition = CONDITIONAL.get(model.test_name)
    if make_condition is None:
        return None
    return model.initial_state(batch, condition=make_condition(batch, torch.Generator().manual_seed(seed)))


@pytest.fixture(params=list(KINDS))
def model(request):
    return make(request.param)


def ids(batch=3, length=9, seed=1):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def close(a, b):
    return torch.allclose(a, b, atol=1e-5)


def test_the_initial_state_is_where_a_call_without_state_starts(model):
    x = ids()
    if model.test_name in CONDITIONAL:  # no start without the condition: a clear error, not a guess
        with pytest.raises(GentextError, match="generates from"):
            model(x, None)
        with pytest.raises(GentextError, match="generates from"):
            model.initial_state(3)
        state = cold(model, 3)
        assert isinstance(state, State) and state.batch_size == 3
        return
    state = model.initial_state(3)
    assert isinstance(state, State) and state.batch_size == 3
    assert close(model(x, state)[0], model(x, None)[0])


def test_a_sequence_fed_in_chunks_with_the_state_carried_equals_one_pass(model):
    x = ids(length=12)
    full, _ = model(x, cold(model, 3))
    state, parts = cold(model, 3), []
    for chunk in x.split([5, 1, 6], dim=1):
        logits, state = model(chunk, state)
        parts.append(logits)
    assert close(torch.cat(parts, dim=1), full)


def test_selected_rows_continue_as_those_rows_would(model):
    x, more = ids(), ids(seed=2)
    _, state = model(x, cold(model, 3))
    rows = torch.tensor([2, 0, 2])
    picked, _ = model(more[rows], state.select(rows))
    assert close(picked, model(more, state)[0][rows])


def test_rows_put_back_to_their_start_continue_like_cold_rows(model):
    if not model.carries_state:
        pytest.skip("a kind that does not carry its state across windows never puts rows back")
    x, more = ids(), ids(seed=2)
    _, state = model(x, None)
    keep = torch.tensor([True, False, True])
    mixed, _ = model(more, state.where(keep, model.initial_state(3)))
    assert close(mixed[1], model(more, None)[0][1]) and close(mixed[0], model(more, state)[0][0])


def test_the_state_survives_named_tensors_shards_and_a_join(model):
    x, more = ids(), ids(seed=2)
    _, state = model(x, cold(model, 3))
    restored = model.state_from_tensors({k: v.clone() for k, v in state.tensors.items()})
    assert close(model(more, restored)[0], model(more, state)[0])
    assert all(t.dtype in (torch.float32, torch.long, torch.bool) for t in state.tensors.values())
    joined = State.cat([state.narrow(0, 1), state.narrow(1, 2)])
    assert all(torch.equal(joined.tensors[k], state.tensors[k]) for k in state.tensors)
    assert all(not t.requires_grad for t in state.detach().tensors.values())


def test_rows_selected_continue_as_in_the_batch_and_leave_its_state_as_it_was(model):
    """A served batch drops finished rows with `select`: outside autograd consecutive rows of a
    batch-first tensor are a view, other rows a copy; either way they continue as they would in the
    whole batch, and the state they came from is left as it was."""
    x, more = ids(), ids(seed=2)
    with torch.inference_mode():
        _, state = model(x, cold(model, 3))
        before = {k: v.clone() for k, v in state.tensors.items()}
        whole, _ = model(more, state)
        for rows in (torch.tensor([1, 2]), torch.tensor([2, 0]), torch.tensor([0])):
            out, _ = model(more[rows], state.select(rows))
            assert close(out, whole[rows]), rows
        picked = state.select(torch.tensor([1, 2]))
    for k, dim in state.batch_dims.items():
        shared = picked.tensors[k].untyped_storage().data_ptr() == state.tensors[k].untyped_storage().data_ptr()
        assert shared == (dim == 0), k  # a view where the rows lead, else a copy
        assert torch.equal(state.tensors[k], before[k]), k


def test_rows_of_different_conditions_joined_continue_as_each_alone():
    """Sources of different lengths share one batch (continuous batching): the ragged source
    dimension is padded and masked, so each row's next logits are what it gets alone."""
    model = make("seq2seq")
    short = model.initial_state(1, condition=torch.tensor([[3, 4]]))
    long = model.initial_state(1, condition=torch.tensor([[5, 6, 7, 8, 9, 2, 1]]))
    joined = State.cat([short, long])
    x = ids(batch=2, length=4)
    both, _ = model(x, joined)
    assert close(both[0], model(x[:1], short)[0][0]) and close(both[1], model(x[1:], long)[0][0])


def test_the_targets_form_gives_the_log_probabilities_of_the_targets(model):
    x, y = ids(), ids(seed=3)
    logits, _ = model(x, cold(model, 3))
    target_logp, _ = model(x, cold(model, 3), targets=y)
    expected = torch.log_softmax(logits.float(), dim=-1).gather(-1, y[..., None])[..., 0]
    assert close(target_logp, expected)


# -- a new kind: a class and a registry line ----------------------------------------------------


class BigramTable(nn.Module):
    """Next-token logits from the current token alone: a (V, V) table. Its state is the number of
    tokens each row has read (batch dimension 0), just to have one to carry."""

    carries_state = True

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.table = nn.Embedding(config.vocab_size, config.vocab_size)

    def initial_state(self, batch, device=None, condition=None):
        return State({"seen": torch.zeros(batch, dtype=torch.long, device=device)}, {"seen": 0})

    def state_from_tensors(self, tensors):
        return State(dict(tensors), {"seen": 0})

    def forward(self, ids, state=None, targets=None):
        state = state if state is not None else self.initial_state(ids.shape[0], ids.device)
        new = State({"seen": state.tensors["seen"] + ids.shape[1]}, {"seen": 0})
        logits = self.table(ids)  # (B, T, V)
        if targets is None:
            return logits, new
        return torch.log_softmax(logits.float(), -1).gather(-1, targets[..., None])[..., 0], new

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())


@pytest.fixture
def bigram(monkeypatch):
    monkeypatch.setitem(REGISTRY, "bigram", BigramTable)


def test_a_kind_added_with_a_class_and_a_registry_line_does_everything(bigram, tiny_corpus, tmp_path, capsys):
    run = tmp_path / "bigram"
    settings = {**TINY_SETTINGS, "learning_rate": 0.05, "kind": "bigram"}
    first = gentext.train(run, paths=[str(tiny_corpus)], steps=20, **settings)
    resumed = gentext.train(run, resume=True, steps=40)
    assert resumed["steps"] == 40 and resumed["val_loss"] < first["val_loss"]
    model = gentext.load(run)
    assert len(model.generate("The", max_new_tokens=12, num_samples=4, seed=0)) == 4
    assert len(model.generate("The", max_new_tokens=12, num_beams=3, num_samples=2)) == 2
    assert (
        "".join(model.stream("The", max_new_tokens=12, seed=1)) == model.generate("The", max_new_tokens=12, seed=1)[0]
    )

    from fastapi.testclient import TestClient

    from gentext.server import create_app

    client = TestClient(create_app({"bigram": model}))
    body = {"prompt": "The", "max_new_tokens": 10, "stream": True, "seed": 2}
    assert "event: done" in client.post("/v1/generate", json=body).text

    gentext.train(tmp_path / "lstm", paths=[str(tiny_corpus)], steps=10, **TINY_SETTINGS)
    gentext.train(tmp_path / "markov", paths=[str(tiny_corpus)], kind="markov", order=3)
    runs = [str(run), str(tmp_path / "lstm"), str(tmp_path / "markov")]
    assert main(["compare", *runs, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["runs"]
    assert [r["kind"] for r in rows] == ["bigram", "lstm", "markov-3"]
