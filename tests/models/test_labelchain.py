"""One Kneser-Ney chain per label (models/labelchain.py): what a labelled run mixes its network with."""

import numpy as np
import torch

from gentext.models.labelchain import LabelChain

V, MARKS = 12, [10, 11]  # label 0 writes ids 0-4, label 1 ids 5-9; 10 and 11 are their marks


def stream(documents: int = 300, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(documents):
        k = int(rng.integers(2))
        ids += [MARKS[k], *rng.integers(5 * k, 5 + 5 * k, size=int(rng.integers(3, 8))).tolist()]
    return np.array(ids)


def test_each_label_reads_its_own_chain_and_the_label_outlives_the_order():
    chain = LabelChain(3, V, MARKS).fit(stream())
    for k, own in enumerate((range(0, 5), range(5, 10))):
        # ten tokens after the mark: far past the order, the label still decides
        ids = torch.tensor([[MARKS[k], *[own[0]] * 10]])
        p = chain(ids, None)[0].exp()[0, -1]
        other = [i for i in range(10) if i not in own]
        assert p[list(own)].sum() > 0.5 and p[other].sum() < 0.05  # the rest: the next mark
    assert set(chain.chains[1].keys_1.tolist()) <= {*range(0, 5), *MARKS}  # label 0's documents alone


def test_scores_steps_and_full_distributions_agree_and_survive_saving():
    chain = LabelChain(3, V, MARKS).fit(stream())
    x = torch.from_numpy(stream(40, seed=1))[None]
    full, state = chain(x[:, :-1], None)
    targets, _ = chain(x[:, :-1], None, targets=x[:, 1:])
    assert torch.allclose(full.gather(-1, x[:, 1:, None])[..., 0], targets)
    steps, step_state = [], None
    with torch.inference_mode():  # generation's path: one token a call, each chain's cached step
        for t in range(x.shape[1] - 1):
            logits, step_state = chain(x[:, t : t + 1], step_state)
            steps.append(logits)
    assert torch.allclose(torch.cat(steps, dim=1), full)
    assert all(torch.equal(state.tensors[k], step_state.tensors[k]) for k in ("context", "label"))
    loaded = LabelChain(3, V, [0, 0])
    loaded.load_state_dict(chain.state_dict())
    assert torch.equal(loaded(x[:, :-1], None)[0], full) and loaded.marks.tolist() == MARKS


def test_rows_of_different_labels_step_together_as_each_alone():
    chain = LabelChain(3, V, MARKS).fit(stream())
    prompts = torch.tensor([[MARKS[0], 1, 2], [MARKS[1], 6, 7], [4, 4, 4]])  # the last: before any mark
    with torch.inference_mode():
        _, state = chain(prompts, None)
        together, _ = chain(torch.tensor([[3], [8], [0]]), state)
        for row in range(3):
            alone, _ = chain(torch.tensor([[[3], [8], [0]][row]]), state.select(torch.tensor([row])))
            assert torch.equal(together[row], alone[0])
    assert state.tensors["label"][:, 0].tolist() == [0, 1, -1]


def test_a_label_without_training_text_reads_the_chain_of_all_text():
    ids = np.array([MARKS[0], 1, 2, 3] * 20)  # label 1 never occurs
    chain = LabelChain(3, V, MARKS).fit(ids)
    after = torch.tensor([[MARKS[1], 1, 2]])
    p = chain(after, None)[0].exp()[0, -1]
    assert torch.allclose(p.sum(), torch.tensor(1.0)) and int(p.argmax()) == 3  # what all the text says
