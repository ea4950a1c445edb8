"""Token ids laid out as parallel streams and cut into BPTT windows.

The ids are one long 1-D array (in memory or a numpy memmap on disk). With `batch_size` B it is
read as B contiguous streams of length L = n // B, each a column of the batch:

    ids:      a b c d e f | g h i j k l | m n o p q r | s t u v w x      (n = 24, B = 4, L = 6)
    row 0:    a b c d e f
    row 1:    g h i j k l      window k (seq_len T = 2):  x = rows[:, kT : kT+T]
    row 2:    m n o p q r                                 y = rows[:, kT+1 : kT+T+1]
    row 3:    s t u v w x

Window k+1 continues every row exactly where window k stopped, so the hidden state of row b is
carried from window to window (truncated BPTT); when the rows run out the data wraps and the state
is reset. Only the rows of one window are ever read, so a memmap never loads the whole corpus.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from gentext.errors import GentextError


def id_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    if vocab_size <= 1 << 16:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def content_hash(ids: np.ndarray) -> str:
    """A short fingerprint of a token stream: a resumed run must see the same data."""
    return hashlib.sha256(np.ascontiguousarray(ids).view(np.uint8)).hexdigest()[:16]


class BPTTBatches:
    def __init__(
        self, ids: np.ndarray, batch_size: int, seq_len: int, what: str = "training text", rows: range | None = None
    ):
        self.ids = ids
        self.rows = rows if rows is not None else range(batch_size)  # this process's rows (data parallel)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.row_len = len(ids) // batch_size
        if self.row_len < seq_len + 1:
            raise GentextError(
                f"the {what} is too short: {len(ids)} tokens cannot fill one window of "
                f"--batch-size {batch_size} x (--seq-len {seq_len} + 1); "
                "use a smaller --seq-len or --batch-size, or more text"
            )
        # Windows per pass over the data; the tail of each row shorter than a window is skipped.
        self.num_windows = (self.row_len - 1) // seq_len

    @property
    def tokens_per_window(self) -> int:
        """Tokens of one window over all rows (every process together)."""
        return self.batch_size * self.seq_len

    def window(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets of window k for this process's rows, LongTensors (rows, T)."""
        start = k * self.seq_len
        rows = np.stack(
            [self.ids[b * self.row_len + start : b * self.row_len + start + self.seq_len + 1] for b in self.rows]
        ).astype(np.int64)  # (rows, T+1)
        tensor = torch.from_numpy(rows)
        return tensor[:, :-1], tensor[:, 1:]
