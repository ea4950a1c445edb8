import re

import numpy as np
import pytest
import torch

from gentext.data.dataset import BPTTBatches, id_dtype, read_rows, release_pages
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


def _resident_kb(path) -> int | None:
    """This process's resident KB of the mappings of `path` (/proc/self/smaps), None off Linux."""
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return None
    total, inside = 0, False
    for line in lines:
        if re.match(r"[0-9a-f]+-[0-9a-f]+ ", line):  # a mapping's header line
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_released_memmap_pages_leave_the_resident_set_and_read_back_the_same(tmp_path):
    path = tmp_path / "ids.bin"
    data = np.random.default_rng(0).integers(0, 255, 8 << 20, dtype=np.uint8)
    data.tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="r")
    if _resident_kb(path) is None:
        pytest.skip("no /proc/self/smaps here")
    assert int(ids.sum()) == int(data.sum())  # every page read
    assert _resident_kb(path) > 4096
    spans = [(i * 1_000_000, i * 1_000_000 + 65) for i in range(8)]
    rows = read_rows(ids, spans)  # releases after each row
    assert _resident_kb(path) < 4096
    assert rows.dtype == np.int64 and rows.tolist() == [data[a:b].tolist() for a, b in spans]
    release_pages(ids[100:])  # a view releases its base's map
    assert _resident_kb(path) == 0
    assert np.array_equal(ids, data)  # read again from the page cache


def test_a_copy_on_write_memmap_keeps_its_changes(tmp_path):
    path = tmp_path / "ids.bin"
    np.zeros(1 << 16, dtype=np.uint8).tofile(path)
    ids = np.memmap(path, dtype=np.uint8, mode="c")
    ids[:10] = 7  # in this process's private pages only
    release_pages(ids)
    assert ids[:10].tolist() == [7] * 10
    rows = read_rows(ids, [(0, 3)])
    assert rows.tolist() == [[7, 7, 7]]
