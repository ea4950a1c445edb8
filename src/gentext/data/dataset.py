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
is reset. Only the rows of one window are ever read, so a memmap never loads the whole corpus,
and the pages read are handed back as the rows move on (`read_rows`, `release_pages`).
"""

from __future__ import annotations

import hashlib
import mmap

import numpy as np
import torch

from gentext.errors import GentextError

# Windows between two releases of a memmap's pages while training: a release costs a re-fault of
# each row's page run, so it is spread out; what is held meanwhile is one run of pages per row.
RELEASE_EVERY = 64


def release_pages(ids: np.ndarray) -> None:
    """Unmap the pages of a read-only memmap this process has read (a no-op for other arrays).

    Why: a read maps not just its bytes but the page cache's whole folio around them (up to 2 MB on
    ext4 with large folios; MADV_RANDOM was tried and changes nothing), and mapped pages
    count in the process's resident set until unmapped. A 1 GB corpus's validation sample (48 rows
    spread over the split) held 49 MB of val.bin and the training windows 22 MB, and over a long
    run every page read stays counted (benchmarks/RESULTS.md, the 512 MB bound). The pages stay in
    the page cache: a later read of them is a minor fault, not disk I/O. Never done to a writable
    or copy-on-write map, where dropping pages could drop data."""
    handle = getattr(ids, "_mmap", None)  # numpy keeps the mmap object (views share it); no public accessor
    if handle is not None and getattr(ids, "mode", None) == "r" and hasattr(mmap, "MADV_DONTNEED"):
        handle.madvise(mmap.MADV_DONTNEED)


def read_rows(ids: np.ndarray, spans: list[tuple[int, int]], release: bool = True) -> np.ndarray:
    """ids[a:b] for each (a, b) span (all the same length), stacked as int64 (rows, b - a); with
    `release`, a memmap's pages are released after each row, so reading many rows spread over a
    file holds one row's pages at a time."""
    rows = []
    for start, stop in spans:
        rows.append(np.array(ids[start:stop], dtype=np.int64))
        if release:
            release_pages(ids)
    return np.stack(rows)


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
        spans = [(b * self.row_len + start, b * self.row_len + start + self.seq_len + 1) for b in self.rows]
        rows = read_rows(self.ids, spans, release=False)  # (rows, T+1)
        if k % RELEASE_EVERY == 0:
            release_pages(self.ids)
        tensor = torch.from_numpy(rows)
        return tensor[:, :-1], tensor[:, 1:]

    def target_positions(self, k: int) -> torch.Tensor:
        """Where window k's targets (rows, T) are in the token stream."""
        starts = torch.tensor([b * self.row_len + k * self.seq_len + 1 for b in self.rows])
        return starts[:, None] + torch.arange(self.seq_len)
