import numpy as np
import pytest
import torch

from gentext.data.dataset import BPTTBatches, id_dtype
from gentext.errors import GentextError


def test_targets_are_inputs_shifted_by_one():
    ids = np.arange(100, dtype=np.uint8)
    batches = BPTTBatches(ids, batch_size=4, seq_len=5)
    x, y = batches.window(0)
    assert x.shape == y.shape == (4, 5)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # ids are consecutive, so the next token is id + 1


def test_rows_are_contiguous_streams_continued_by_the_next_window():
    ids = np.arange(100, dtype=np.uint8)
    batches = BPTTBatches(ids, batch_size=4, seq_len=5)
    assert batches.row_len == 25
    x0, y0 = batches.window(0)
    x1, _ = batches.window(1)
    assert x0[:, 0].tolist() == [0, 25, 50, 75]  # row b starts at b * row_len
    assert torch.equal(x1[:, 0], y0[:, -1])  # window k+1 starts where window k's targets ended
    assert batches.num_windows == 4  # (25 - 1) // 5


def test_too_short_corpus_is_a_clear_error():
    with pytest.raises(GentextError, match="too short.*--seq-len"):
        BPTTBatches(np.arange(20, dtype=np.uint8), batch_size=4, seq_len=8)


@pytest.mark.parametrize("vocab, dtype", [(65, np.uint8), (256, np.uint8), (257, np.uint16), (70_000, np.uint32)])
def test_smallest_id_dtype(vocab, dtype):
    assert id_dtype(vocab) == dtype
