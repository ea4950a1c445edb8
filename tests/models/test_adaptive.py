"""Adaptive softmax: a proper distribution, cheap targets equal to the full one, tying, save/load, training."""

import pytest
import torch

from gentext import checkpoint
from gentext.config import ModelConfig
from gentext.data.tokenizers import CharTokenizer
from gentext.errors import GentextError
from gentext.models import build_model
from gentext.models.adaptive import AdaptiveSoftmax
from gentext.runconfig import RunConfig

VOCAB = 23


def make(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    kw.setdefault("kind", "lstm")
    cfg = ModelConfig(vocab_size=VOCAB, embed_size=12, hidden_size=12, num_layers=2, adaptive_cutoffs=[5, 14], **kw)
    return build_model(cfg).eval()


def test_log_probs_form_a_distribution_over_the_whole_vocabulary():
    torch.manual_seed(0)
    head = AdaptiveSoftmax(8, VOCAB, [5, 14])
    logp = head.log_probs(torch.randn(3, 4, 8))
    assert logp.shape == (3, 4, VOCAB)
    assert torch.allclose(logp.logsumexp(-1), torch.zeros(3, 4), atol=1e-5)


def test_target_log_probs_equal_the_full_distribution_for_every_cluster():
    torch.manual_seed(0)
    head = AdaptiveSoftmax(8, VOCAB, [5, 14])
    x = torch.randn(2, 30, 8)
    targets = torch.arange(60).reshape(2, 30) % VOCAB  # head words and both tails
    expected = head.log_probs(x).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(head.target_log_probs(x, targets), expected, atol=1e-6)


def test_gradients_reach_only_the_tails_that_targets_use():
    torch.manual_seed(0)
    head = AdaptiveSoftmax(8, VOCAB, [5, 14])
    loss = -head.target_log_probs(torch.randn(10, 8), torch.tensor([0, 1, 6, 7, 2, 3, 4, 8, 9, 10])).sum()
    loss.backward()
    assert head.weight.grad[:14].abs().sum() > 0
    assert torch.all(head.weight.grad[14:] == 0)  # no target in the last cluster


def test_model_targets_path_matches_its_logits_and_the_fast_step():
    model = make(tie_weights=True)
    assert model.head.weight is model.embedding.weight
    ids = torch.randint(0, VOCAB, (2, 9))
    targets = torch.randint(0, VOCAB, (2, 9))
    with torch.inference_mode():
        logits, state = model(ids)
        logp, _ = model(ids, targets=targets)
        assert torch.allclose(logp, logits.gather(-1, targets[..., None])[..., 0], atol=1e-6)
        step, _ = model(targets[:, :1], state)
        model.fast_step = False
        slow, _ = model(targets[:, :1], state)
    assert torch.allclose(step, slow, atol=1e-5)


def test_save_load_keeps_the_clusters_and_the_tie(tmp_path):
    model = make(tie_weights=True)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(VOCAB)])
    checkpoint.save_run_files(tmp_path, RunConfig(model=model.config), tok)
    checkpoint.save_weights(tmp_path, model)
    loaded = checkpoint.load_run(tmp_path).model
    assert loaded.head.weight is loaded.embedding.weight
    ids = torch.randint(0, VOCAB, (2, 7))
    assert torch.equal(model(ids)[0], loaded(ids)[0])


@pytest.mark.parametrize("cutoffs", [[0], [5, 5], [9, 4], [VOCAB]])
def test_bad_cutoffs_are_refused_with_a_clear_message(cutoffs):
    with pytest.raises(GentextError, match="--adaptive-softmax cutoffs must increase"):
        build_model(ModelConfig(kind="lstm", vocab_size=VOCAB, adaptive_cutoffs=cutoffs))


@pytest.mark.slow
def test_training_with_an_adaptive_softmax_lowers_the_loss():
    model = make()
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    ids = torch.arange(41).remainder(VOCAB)[None].repeat(4, 1)  # a sequence the model can learn
    losses = []
    for _ in range(200):
        logp, _ = model(ids[:, :-1], targets=ids[:, 1:])
        loss = -logp.mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]


def test_onnx_export_of_an_adaptive_model_gives_the_same_log_probabilities(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    from gentext.conditions import Condition
    from gentext.inference.export import export_onnx
    from gentext.inference.textmodel import TextModel

    model = make(tie_weights=True)
    tok = CharTokenizer([chr(ord("a") + i) for i in range(VOCAB)])
    path = export_onnx(
        TextModel(model, tok, RunConfig(model=model.config), condition=Condition()), tmp_path / "m.onnx"
    ).path
    ids = np.array([1, 7, 20], dtype=np.int64)
    zeros = np.zeros((2, 3, 12), np.float32)
    out = ort.InferenceSession(str(path)).run(None, {"ids": ids, "h": zeros, "c": zeros})
    with torch.inference_mode():
        expected, _ = model(torch.from_numpy(ids)[:, None], None)
    assert np.abs(out[0] - expected[:, 0].numpy()).max() < 1e-4
