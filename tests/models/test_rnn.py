import pytest
import torch

from gentext import checkpoint
from gentext.config import ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.models import build_model
from gentext.runconfig import RunConfig

KINDS = ["lstm", "gru", "rnn"]


def make(kind: str, **kw) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=11, embed_size=8, hidden_size=12, num_layers=2, **kw)
    return build_model(cfg).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_forward_shapes(kind):
    model = make(kind)
    logits, state = model(torch.randint(0, 11, (3, 7)), None)
    assert logits.shape == (3, 7, 11)
    assert state.batch_size == 3
    assert state.tensors["h"].shape == (2, 3, 12)
    assert set(state.tensors) == ({"h", "c"} if kind == "lstm" else {"h"})


@pytest.mark.parametrize("kind", KINDS)
def test_chunks_with_carried_state_equal_one_pass(kind):
    model = make(kind)
    ids = torch.randint(0, 11, (2, 20))
    full, _ = model(ids, None)
    state, parts = None, []
    for chunk in ids.split([7, 1, 12], dim=1):
        logits, state = model(chunk, state)
        parts.append(logits)
    assert torch.allclose(torch.cat(parts, dim=1), full, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_gives_identical_logits(kind, tmp_path):
    model = make(kind, tie_weights=False)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(11)])
    checkpoint.save_run_files(tmp_path, RunConfig(model=model.config), tok)
    checkpoint.save_weights(tmp_path, model)
    loaded = checkpoint.load_run(tmp_path).model
    ids = torch.randint(0, 11, (2, 9))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_tied_weights_share_one_matrix_and_survive_save_load(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind="lstm", vocab_size=11, embed_size=12, hidden_size=12, tie_weights=True)).eval()
    assert model.head.weight is model.embedding.weight
    tok = CharTokenizer([chr(ord("a") + i) for i in range(11)])
    checkpoint.save_run_files(tmp_path, RunConfig(model=model.config), tok)
    checkpoint.save_weights(tmp_path, model)
    loaded = checkpoint.load_run(tmp_path).model
    assert loaded.head.weight is loaded.embedding.weight
    ids = torch.randint(0, 11, (1, 5))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


def test_tie_weights_needs_equal_sizes():
    from gentext.errors import GentextError

    with pytest.raises(GentextError, match="--tie-weights needs --embed-size equal"):
        build_model(ModelConfig(kind="lstm", vocab_size=5, embed_size=4, hidden_size=8, tie_weights=True))


@pytest.mark.parametrize("kind", KINDS)
def test_single_token_fast_path_matches_the_sequence_kernel(kind):
    model = make(kind)
    ids = torch.randint(0, 11, (4, 6))
    with torch.inference_mode():
        _, state = model(ids, None)
        token = torch.randint(0, 11, (4, 1))
        model.fast_step = False
        slow, slow_state = model(token, state)
        model.fast_step = True
        fast, fast_state = model(token, state)
        cold_fast, _ = model(token, None)
        model.fast_step = False
        cold_slow, _ = model(token, None)
    assert torch.allclose(slow, fast, atol=1e-5) and torch.allclose(cold_slow, cold_fast, atol=1e-5)
    assert slow_state.tensors.keys() == fast_state.tensors.keys()
    for name, tensor in slow_state.tensors.items():
        assert torch.allclose(tensor, fast_state.tensors[name], atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_generated_text_is_identical_with_and_without_the_fast_path(kind):
    from tests.conftest import generated_ids

    model = make(kind)

    def run():
        return generated_ids(model, [1, 2, 3], max_new_tokens=40, temperature=1.0, num_samples=3, seed=5)

    fast = run()
    model.fast_step = False
    assert run() == fast


@pytest.mark.parametrize("width", [12, 100, 512])
def test_step_cells_activate_the_same_slices_as_the_chunked_formula_bit_for_bit(width):
    """The step slices gates by `narrow` for speed; every width, even one that is not a multiple
    of the vector length, gives exactly the numbers of nn.LSTM/GRU's chunked formulas."""
    from gentext.models.rnnstep import _gru, _lstm

    torch.manual_seed(width)
    gates, c, h = torch.randn(3, 4 * width), torch.randn(3, width), torch.randn(3, width)
    i, f, g, o = gates.chunk(4, dim=1)
    c_ref = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h_new, c_new = _lstm(gates, c)
    assert torch.equal(c_new, c_ref) and torch.equal(h_new, torch.sigmoid(o) * torch.tanh(c_ref))
    xw, hw = torch.randn(3, 3 * width), torch.randn(3, 3 * width)
    (xr, xz, xn), (hr, hz, hn) = xw.chunk(3, dim=1), hw.chunk(3, dim=1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    assert torch.equal(_gru(xw, hw, h), torch.lerp(torch.tanh(xn + r * hn), h, z))  # (1 - z) * n + z * h


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_prompt_is_read_in_the_steps_format_only_when_generation_reads_it(kind):
    """In int8, generation's prompt runs token by token in int8 (as the tokens after it will);
    any other sequence (evaluation, training's checks) still takes the float32 sequence kernel."""
    from gentext.models.priming import reading_prompt

    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=20, embed_size=8, hidden_size=64, num_layers=2)).eval()
    ids = torch.randint(0, 20, (2, 7))
    with torch.inference_mode():
        fp32, _ = model(ids)
        model.set_weight_format("int8")
        sequence, _ = model(ids)
        with reading_prompt():
            primed, primed_state = model(ids)
        state, stepped = None, []
        for t in range(ids.shape[1]):
            logits, state = model._step(ids[:, t], state)
            stepped.append(logits)
    assert torch.equal(sequence, fp32)
    assert torch.equal(primed, torch.cat(stepped, dim=1)) and not torch.equal(primed, fp32)
    assert all(torch.equal(primed_state.tensors[n], state.tensors[n]) for n in state.tensors)
