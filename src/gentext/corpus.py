"""Read and validate text: files, directories, stdin, or a built-in corpus; split train/validation."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .config import CorpusConfig
from .download import NAMED_CORPORA, fetch_corpus
from .errors import GentextError


def _python_docs() -> str:
    # CPython ships the text of its language reference for `help()`: ~465 KB of English prose,
    # present on every installation, so the default run needs no download.
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key].strip("\n") for key in sorted(topics.topics)) + "\n"


BUILTIN_CORPORA: dict[str, tuple[str, Callable[[], str]]] = {
    "python-docs": ("The Python language reference (pydoc_data.topics), ~465 KB of English prose", _python_docs),
}


@dataclass
class Corpus:
    train: str
    val: str
    sources: list[str]  # what was read, for the run's record


def decode(data: bytes, name: str, errors: str = "strict") -> str:
    """UTF-8 bytes to text; invalid input is an error naming the file and byte offset."""
    if b"\x00" in data[:8192]:
        raise GentextError(f"{name}: looks like a binary file (NUL bytes), not text")
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise GentextError(
            f"{name}: not valid UTF-8 at byte offset {exc.start}; re-encode it or pass --encoding-errors replace"
        ) from None


def find_files(paths: list[str], glob: str = "*.txt") -> list[str]:
    """Expand directories recursively (files matching `glob`), keep files and "-" as given."""
    found: list[str] = []
    for raw in paths:
        if raw == "-":
            found.append(raw)
            continue
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob(glob) if p.is_file())
            if not files:
                raise GentextError(f"{raw}: directory has no files matching {glob!r} (use --glob)")
            found.extend(str(p) for p in files)
        elif path.is_file():
            found.append(raw)
        else:
            raise GentextError(f"{raw}: no such file or directory")
    return found


def read_text(paths: list[str], glob: str = "*.txt", errors: str = "strict") -> str:
    """Concatenate the text of every path (a newline between files that lack one)."""
    parts = []
    for name in find_files(paths, glob):
        if name == "-":
            data = sys.stdin.buffer.read()
            name = "<stdin>"
        else:
            try:
                data = Path(name).read_bytes()
            except OSError as exc:
                raise GentextError(f"{name}: cannot read ({exc.strerror})") from None
        text = decode(data, name, errors)
        if parts and not parts[-1].endswith("\n"):
            parts.append("\n")
        parts.append(text)
    return "".join(parts)


def load_builtin(name: str) -> str:
    if name not in BUILTIN_CORPORA:
        known = ", ".join([*BUILTIN_CORPORA, *NAMED_CORPORA])
        raise GentextError(f"unknown corpus {name!r}; available: {known} (see `gentext corpora`)")
    return BUILTIN_CORPORA[name][1]()


def load_corpus(config: CorpusConfig) -> Corpus:
    """Read the training text and hold out validation text (the last `val_fraction`, or `val_path`)."""
    config.validate()
    if config.paths:
        text = read_text(config.paths, config.glob, config.encoding_errors)
        sources = list(config.paths)
    elif config.builtin in NAMED_CORPORA:
        train_path, valid_path = fetch_corpus(config.builtin, config.offline)
        text = read_text([str(train_path)])
        sources = [f"corpus:{config.builtin}"]
        if valid_path is not None and not config.val_path:  # the corpus' own split
            return Corpus(train=text, val=read_text([str(valid_path)]), sources=sources)
    else:
        text = load_builtin(config.builtin)
        sources = [f"builtin:{config.builtin}"]
    if not text.strip():
        raise GentextError(f"the corpus is empty ({', '.join(sources)})")
    if config.mode == "lines":
        text = as_documents(text)
    if config.val_path:
        val = read_text([config.val_path], config.glob, config.encoding_errors)
        val = as_documents(val) if config.mode == "lines" else val
        if not val.strip():
            raise GentextError(f"{config.val_path}: the validation text is empty")
        return Corpus(train=text, val=val, sources=sources)
    cut = len(text) - int(len(text) * config.val_fraction)
    if config.mode == "lines" and config.val_fraction > 0:
        cut = text.rfind("\n", 0, cut) + 1  # whole documents on each side
    return Corpus(train=text[:cut], val=text[cut:], sources=sources)


def as_documents(text: str) -> str:
    """Lines mode: every non-empty line is a document and its newline the end-of-text token, which
    the model learns to produce; the newline before a document is its start."""
    return "".join(line.strip() + "\n" for line in text.splitlines() if line.strip())
