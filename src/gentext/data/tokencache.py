"""Encode a corpus once into token-id files on disk, read back as numpy memmaps.

    text pieces --(tokenizer, piece by piece)--> $GENTEXT_CACHE/tokens/KEY/{train,val}.bin + meta.json

The corpus is streamed (pieces of a few MB, cut after newlines so no token is split), so a corpus
larger than memory trains with flat memory: training reads only the windows it needs from the
memmap. KEY hashes the text itself (with its train/validation split) and the tokenizer, so the
same data with the same tokenizer is encoded once and reused, by later runs and by --resume;
edited data gets a new key. Ids are stored as uint8/uint16/uint32, the smallest that fits.

An entry checks itself when opened: meta.json records each file's length and a digest of its
first and last 64 KiB, so a file cut short (a crash or a full disk while copying, an interrupted
sync) or overwritten is found at once; it is then encoded again from the text, with one line saying
so, instead of failing every later run. Entries are written into a temporary folder and renamed
into place, so a half-written one is never found under its key.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gentext.config import CorpusConfig
from gentext.data.corpus import CorpusSource, split_pieces
from gentext.data.dataset import id_dtype
from gentext.data.tokenizers import Tokenizer
from gentext.errors import GentextError
from gentext.hardware import release_memory
from gentext.paths import cache_dir
from gentext.runconfig import RunConfig

FORMAT = 2  # 2: meta.json records each file's length and digest
EDGE = 1 << 16  # bytes at each end of a file that its digest reads
logger = logging.getLogger(__name__)


@dataclass
class TokenData:
    train: np.ndarray  # memmap of training ids
    val: np.ndarray | None  # memmap of validation ids, None when there is no validation text
    val_chars: int  # characters of the validation text (for bits per character)
    key: str  # content + tokenizer fingerprint: a resumed run must see the same data
    path: Path


def _hashed(pieces: Iterator[tuple[bool, str]], digest) -> Iterator[tuple[bool, str]]:
    """Pass pieces through, hashing each with its side of the split."""
    for is_val, text in pieces:
        digest.update(b"\x01" if is_val else b"\x00")
        digest.update(text.encode("utf-8", "surrogatepass"))
        yield is_val, text


def fingerprint_and_fit(
    source: CorpusSource, config: CorpusConfig, fit: Callable[[Iterator[tuple[bool, str]]], Tokenizer] | None
) -> tuple[str, Tokenizer | None]:
    """One pass over the corpus: its content hash, and a tokenizer fitted on the way when `fit` is given."""
    digest = hashlib.sha256()
    pieces = _hashed(split_pieces(source, config), digest)
    tok = None
    if fit is not None:
        tok = fit(pieces)
    for _ in pieces:  # whatever the fitter did not read (BPE reads only the training side)
        pass
    return digest.hexdigest(), tok


def _key(content: str, tok: Tokenizer) -> str:
    spec = json.dumps({"format": FORMAT, "content": content, "tokenizer": tok.to_json()}, sort_keys=True)
    return hashlib.sha256(spec.encode("utf-8")).hexdigest()[:32]


def token_data(source: CorpusSource, config: CorpusConfig, tok: Tokenizer, content: str, progress: bool) -> TokenData:
    """The corpus' ids as memmaps, encoding it into the cache first if this data and tokenizer are new."""
    key = _key(content, tok)
    entry = cache_dir() / "tokens" / key
    if entry.exists() and _damaged(entry, warn=True):
        shutil.rmtree(entry, ignore_errors=True)
    if not (entry / "meta.json").exists():
        _encode(source, config, tok, entry, progress)
        release_memory()  # the pass's text and id buffers, freed but kept by the allocator
    return _mapped(entry, key)


def held_out(run_config: RunConfig) -> TokenData | None:
    """A run's ids by the cache key its config.json records, if the cache still holds them with a
    held-out split to score (at least two tokens); never re-encodes."""
    key = run_config.data.cache_key if run_config.data is not None else ""
    entry = cache_dir() / "tokens" / key
    if not key or not entry.exists() or _damaged(entry, warn=True):
        return None
    data = _mapped(entry, key)
    return data if data.val is not None and len(data.val) >= 2 else None


def _digest(path: Path) -> str:
    """A cheap fingerprint of a file: its length and its first and last EDGE bytes."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(EDGE))
        if size > EDGE:
            handle.seek(max(size - EDGE, EDGE))
            digest.update(handle.read())
    return digest.hexdigest()[:32]


def _damaged(entry: Path, warn: bool) -> str | None:
    """Why a cache entry cannot be used as it is (None: it is whole), said in one line if `warn`."""
    reason = None
    try:
        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        itemsize = np.dtype(meta["dtype"]).itemsize
        for name, count in (("train.bin", meta["train_tokens"]), ("val.bin", meta["val_tokens"])):
            size = (entry / name).stat().st_size
            if size != count * itemsize:
                reason = f"{name} is {size:,} bytes, {count * itemsize:,} expected"
            elif _digest(entry / name) != meta["digests"][name]:
                reason = f"{name} does not match its digest"
            if reason:
                break
    except (OSError, ValueError, KeyError, TypeError) as exc:
        reason = f"unreadable ({type(exc).__name__}: {exc})"
    if reason and warn:
        logger.warning("the token cache entry %s was damaged (%s); encoding the text again", entry, reason)
    return reason


def _mapped(entry: Path, key: str) -> TokenData:
    meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
    dtype = np.dtype(meta["dtype"])

    def mapped(name: str, count: int) -> np.ndarray | None:
        if count == 0:
            return None
        return np.memmap(entry / name, dtype=dtype, mode="r", shape=(count,))

    return TokenData(
        train=mapped("train.bin", meta["train_tokens"]),
        val=mapped("val.bin", meta["val_tokens"]),
        val_chars=meta["val_chars"],
        key=key,
        path=entry,
    )


def _encode(source: CorpusSource, config: CorpusConfig, tok: Tokenizer, entry: Path, progress: bool) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    dtype = id_dtype(tok.vocab_size)
    tmp = Path(tempfile.mkdtemp(prefix=".encoding-", dir=entry.parent))
    counts = {False: 0, True: 0}
    val_chars = 0
    try:
        with (
            open(tmp / "train.bin", "wb") as train_file,
            open(tmp / "val.bin", "wb") as val_file,
            tqdm(desc="encoding", unit="char", unit_scale=True, disable=not progress, leave=False) as bar,
        ):
            for is_val, text in split_pieces(source, config):
                ids = tok.encode(text, dtype)
                (val_file if is_val else train_file).write(ids.tobytes())
                counts[is_val] += len(ids)
                val_chars += len(text) if is_val else 0
                bar.update(len(text))
            for f in (train_file, val_file):
                f.flush()
                os.fsync(f.fileno())
        meta = {
            "format": FORMAT,
            "dtype": dtype.name,
            "train_tokens": counts[False],
            "val_tokens": counts[True],
            "val_chars": val_chars,
            "sources": source.sources,
            "digests": {name: _digest(tmp / name) for name in ("train.bin", "val.bin")},
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        try:
            os.rename(tmp, entry)  # atomic: a half-written entry is never seen
        except OSError:
            if not (entry / "meta.json").exists():  # not a concurrent writer that finished first
                raise
    except OSError as exc:
        raise GentextError(
            f"cannot write the token cache in {entry.parent} ({exc.strerror}); set GENTEXT_CACHE"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
