"""Read and validate text: files, directories, stdin, or a built-in corpus; split train/validation."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gentext.config import CorpusConfig
from gentext.data import generated
from gentext.data.download import NAMED_CORPORA, fetch_corpus
from gentext.errors import GentextError


def _python_docs() -> str:
    # CPython ships the text of its language reference for `help()`: ~465 KB of English prose,
    # present on every installation, so the default run needs no download.
    from pydoc_data import topics

    return "\n\n".join(topics.topics[key].strip("\n") for key in sorted(topics.topics)) + "\n"


BUILTIN_CORPORA: dict[str, tuple[str, Callable[[], str]]] = {
    "python-docs": ("The Python language reference (pydoc_data.topics), ~465 KB of English prose", _python_docs),
    "dates": (
        "20,000 dates written in 8 formats and 12 languages (Babel/CLDR) <TAB> ISO 8601; --condition source",
        lambda: generated.dates(),
    ),
    "names": (
        "20,000 first and last names in 11 languages (Faker's locale data), label = locale; --condition label",
        lambda: generated.names(),
    ),
}


PIECE_CHARS = 1 << 22  # text is handled in pieces of ~4M characters: memory stays flat for any corpus size
READ_BYTES = 1 << 22


@dataclass
class Corpus:
    train: str
    val: str
    sources: list[str]  # what was read, for the run's record


def _binary_check(data: bytes, name: str) -> None:
    if b"\x00" in data[:8192]:
        raise GentextError(f"{name}: looks like a binary file (NUL bytes), not text")


def _utf8_error(name: str, offset: int) -> GentextError:
    return GentextError(
        f"{name}: not valid UTF-8 at byte offset {offset}; re-encode it or pass --encoding-errors replace"
    )


def decode(data: bytes, name: str, errors: str = "strict") -> str:
    """UTF-8 bytes to text; invalid input is an error naming the file and byte offset."""
    _binary_check(data, name)
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise _utf8_error(name, exc.start) from None


def _file_chunks(name: str, errors: str) -> Iterator[str]:
    """Decoded text of one file, read in blocks (a multi-GB file never sits in memory)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors)
    try:
        with open(name, "rb") as f:
            offset = 0
            while True:
                data = f.read(READ_BYTES)
                if offset == 0:
                    _binary_check(data, name)
                pending = len(decoder.getstate()[0])  # bytes of a character split by the last block
                try:
                    text = decoder.decode(data, final=not data)
                except UnicodeDecodeError as exc:
                    raise _utf8_error(name, offset - pending + exc.start) from None
                offset += len(data)
                if text:
                    yield text
                if not data:
                    return
    except OSError as exc:
        raise GentextError(f"{name}: cannot read ({exc.strerror})") from None


def _raw_chunks(names: list[str], errors: str, stdin: bytes | None = None) -> Iterator[str]:
    """The text of every file in turn, a newline between files when one lacks it. `stdin`: the
    bytes of "-" when already read (a pipe can be read only once)."""
    after_line = True
    for name in names:
        if name == "-":
            data = sys.stdin.buffer.read() if stdin is None else stdin
            chunks: Iterable[str] = [decode(data, "<stdin>", errors)]
        else:
            chunks = _file_chunks(name, errors)
        for i, chunk in enumerate(chunks):
            if i == 0 and not after_line:
                yield "\n"
            after_line = chunk.endswith("\n")
            yield chunk


def at_newlines(chunks: Iterable[str], size: int | None = None) -> Iterator[str]:
    """Regroup text into pieces that end right after a newline (so no word, line or document is
    cut between two pieces) of about `size` characters; a line longer than 4 x size is cut anyway."""
    size = size or PIECE_CHARS
    buffer: list[str] = []
    held = 0
    for chunk in chunks:
        buffer.append(chunk)
        held += len(chunk)
        if held < size:
            continue
        text = "".join(buffer)
        cut = text.rfind("\n") + 1
        if cut == 0 and held < 4 * size:
            continue
        cut = cut or len(text)
        yield text[:cut]
        buffer, held = ([text[cut:]], len(text) - cut) if cut < len(text) else ([], 0)
    if held:
        yield "".join(buffer)


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
    return "".join(_raw_chunks(find_files(paths, glob), errors))


def load_builtin(name: str) -> str:
    if name not in BUILTIN_CORPORA:
        known = ", ".join([*BUILTIN_CORPORA, *NAMED_CORPORA])
        raise GentextError(f"unknown corpus {name!r}; available: {known} (see `gentext corpora`)")
    return BUILTIN_CORPORA[name][1]()


class Shaping:
    """How a corpus's text becomes the documents a model reads: here plain text, as it is (lines
    mode: every non-empty line a document). Each condition (gentext/conditions) is a Shaping with
    its own rules: which files it accepts, how a piece of text becomes documents, and whether
    documents are held out every k-th (`documents`) rather than the text's tail."""

    documents = False

    def check_files(self, files: list[str], config: CorpusConfig) -> None:
        """Refuse files this shaping cannot read, naming the file and line, before any training."""

    def shape(self, pieces: Iterable[str], config: CorpusConfig, labels: dict[str, int]) -> Iterator[str]:
        """One pass over the text's pieces, shaped (`labels`: what a labelled pass has met so far)."""
        return (as_documents(piece) for piece in pieces) if config.mode == "lines" else iter(pieces)


@dataclass
class CorpusSource:
    """The corpus as re-readable streams of text pieces (each ending after a newline)."""

    train: Callable[[], Iterator[str]]
    val: Callable[[], Iterator[str]] | None  # a separate validation text; None: split off the end of train
    sources: list[str]
    # Characters of the (shaped) training text per mode, counted once: every pass that splits the
    # corpus needs the cut, and a second count would read a multi-GB corpus again.
    train_chars: dict[str, int] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)  # --condition label: label -> mark index (conditions.py)
    shaping: Shaping = field(default_factory=Shaping)  # the run's condition (gentext/conditions)


def open_corpus(config: CorpusConfig, shaping: Shaping) -> CorpusSource:
    """Check that the corpus exists and say how to read it, shaped by the run's condition (a plain
    `Shaping()` for text generated from nothing); nothing large is read here."""
    config.validate()

    def from_files(paths: list[str], glob: str) -> Callable[[], Iterator[str]]:
        files = find_files(paths, glob)
        shaping.check_files(files, config)
        stdin = sys.stdin.buffer.read() if "-" in files else None  # read once, passed over many times
        return lambda: at_newlines(_raw_chunks(files, config.encoding_errors, stdin))

    def from_text(text: str) -> Callable[[], Iterator[str]]:
        return lambda: at_newlines([text])

    val = from_files([config.val_path], config.glob) if config.val_path else None
    if config.paths:
        return CorpusSource(from_files(config.paths, config.glob), val, list(config.paths), shaping=shaping)
    if config.builtin in NAMED_CORPORA:
        train_path, valid_path = fetch_corpus(config.builtin, config.offline)
        if valid_path is not None and val is None:  # the corpus' own split
            val = from_files([str(valid_path)], "*")
        return CorpusSource(from_files([str(train_path)], "*"), val, [f"corpus:{config.builtin}"], shaping=shaping)
    text = from_text(load_builtin(config.builtin))
    return CorpusSource(text, val, [f"builtin:{config.builtin}"], shaping=shaping)


def split_pieces(source: CorpusSource, config: CorpusConfig) -> Iterator[tuple[bool, str]]:
    """(is_validation, text) pieces of the corpus in order: the training text, then the validation
    text (a separate file, or the last `val_fraction` of the characters). In lines mode every
    non-empty line is a document, and a split falls between documents."""

    def shaped(stream: Iterable[str]) -> Iterator[str]:
        return source.shaping.shape(stream, config, source.labels)

    empty = GentextError(f"the corpus is empty ({', '.join(source.sources)})")
    train = _nonblank(shaped(source.train()), empty)
    if source.shaping.documents and source.val is None:
        yield from _every_kth(train, config.val_fraction)
        return
    if source.val is not None:
        yield from ((False, piece) for piece in train)
        empty_val = GentextError(f"{config.val_path or 'the validation file'}: the validation text is empty")
        yield from ((True, piece) for piece in _nonblank(shaped(source.val()), empty_val))
        return
    if config.mode not in source.train_chars:  # a first pass finds where to cut
        source.train_chars[config.mode] = sum(len(piece) for piece in shaped(source.train()))
    total = source.train_chars[config.mode]
    cut = total - int(total * config.val_fraction)
    pos = 0
    for piece in train:
        end = pos + len(piece)
        if end <= cut:
            yield False, piece
        elif pos >= cut:
            yield True, piece
        else:
            local = cut - pos
            if config.mode == "lines":
                local = piece.rfind("\n", 0, local) + 1  # whole documents on each side
            if local:
                yield False, piece[:local]
            if piece[local:]:
                yield True, piece[local:]
        pos = end


def _every_kth(documents: Iterable[str], fraction: float) -> Iterator[tuple[bool, str]]:
    """Labelled corpora are often grouped by label, so the tail would hold out one label only:
    every k-th document (k = 1/fraction) is held out instead, the held-out text after the rest."""
    k = round(1 / fraction) if fraction > 0 else 0
    held, index = [], 0
    for piece in documents:
        kept = []
        for line in piece.splitlines(keepends=True):
            index += 1
            (held if k and index % k == 0 else kept).append(line)
        if kept:
            yield False, "".join(kept)
    if held:
        yield True, "".join(held)


def _nonblank(pieces: Iterable[str], error: GentextError) -> Iterator[str]:
    """Pass pieces through; raise `error` after the last one if none had any text."""
    seen = False
    for piece in pieces:
        seen = seen or (bool(piece) and not piece.isspace())
        yield piece
    if not seen:
        raise error


def load_corpus(config: CorpusConfig, shaping: Shaping) -> Corpus:
    """The whole corpus in memory: training and validation text (for small uses such as the
    held-out text of a run; training itself streams the corpus through `tokencache`)."""
    source = open_corpus(config, shaping)
    parts: dict[bool, list[str]] = {False: [], True: []}
    for is_val, piece in split_pieces(source, config):
        parts[is_val].append(piece)
    return Corpus(train="".join(parts[False]), val="".join(parts[True]), sources=source.sources)


def as_documents(text: str) -> str:
    """Lines mode: every non-empty line is a document and its newline the end-of-text token, which
    the model learns to produce; the newline before a document is its start."""
    return "".join(line.strip() + "\n" for line in text.splitlines() if line.strip())
