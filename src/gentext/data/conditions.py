"""Labels that condition generation (`--condition label`): how a label enters every model kind.

A labelled corpus has `label<TAB>text` lines. Each becomes one document preceded by a *label mark*,
a character reserved for that label: label i is chr(LABEL_BASE + i), a code point of Unicode's
plane-15 private use area that real text does not use (text containing one is refused). So the
stream a model trains on reads `\\n<mark>text\\n<mark>text...`, and after reading a document's
mark the network's state is a learned function of the label alone — the lesson's "feature vector
mapped into the initial state" — for the recurrent kinds, the Transformer (which attends to it) and
the Markov chain (the mark is context: one chain per label where the order reaches it). Nothing in
training, the token cache, batching, beams or serving needs to know labels exist: generation
primes with "\\n" + mark (+ prompt), never samples a mark, and strips none from the output because
the prompt text never contained it.

The marks map to labels in the order labels first appear in the corpus (deterministic for a given
text); the run records the list in config.json as `labels`. Documents are shuffled (seeded) within
each piece of the corpus read (~4M characters), so the held-out every-k-th line is a random share.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np

from gentext.errors import GentextError

LABEL_BASE = 0xF0000
MAX_LABELS = 0xFFFD  # plane 15 holds 65,534 private-use code points; the last one ends a source
SOURCE_END = chr(0xFFFFD)  # `--condition source`: a document is source SOURCE_END target
LINE_SHAPES = {"label": "label<TAB>text", "source": "source<TAB>target"}  # what each line of the file holds


def is_reserved(char: str) -> bool:
    return LABEL_BASE <= ord(char) <= 0xFFFFD


def mark(index: int) -> str:
    return chr(LABEL_BASE + index)


def is_mark(char: str) -> bool:
    return LABEL_BASE <= ord(char) < LABEL_BASE + MAX_LABELS


def split_line(line: str, condition: str = "label") -> tuple[str, str]:
    """`label<TAB>text[<TAB>ignored...]` (or source<TAB>target) -> both stripped; a clear error otherwise."""
    parts = line.split("\t")
    if len(parts) < 2 or not parts[0].strip():
        shape = LINE_SHAPES.get(condition, "label<TAB>text")
        raise GentextError(f"--condition {condition}: each line must be {shape}; got {line[:60]!r}")
    text = parts[1].strip()
    if any(is_reserved(c) for c in parts[0] + text):
        raise GentextError("the text uses private-use characters (plane 15) that gentext reserves for conditions")
    return parts[0].strip(), text


def check_columns(files: list[str], condition: str) -> None:
    """Every non-blank line of a label or pair file has its TAB: checked file by file before any
    training, so the error can name the file and the line (the readers later see joined pieces;
    bad UTF-8 is theirs to report, with its byte offset)."""
    for name in files:
        if name == "-":
            continue
        with open(name, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    try:
                        split_line(line.rstrip("\n"), condition)
                    except GentextError as exc:
                        raise GentextError(f"{name}, line {number}: {exc}") from None


def labelled_documents(text: str, labels: dict[str, int]) -> str:
    """Lines of `label<TAB>text` -> one document per line, each led by its label's mark. New labels
    are added to `labels` (label -> index) in the order they appear; lines with no text are skipped."""
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        label, body = split_line(line)
        if not body:
            continue
        if label not in labels:
            if len(labels) >= MAX_LABELS:
                raise GentextError(f"--condition label: more than {MAX_LABELS} distinct labels")
            labels[label] = len(labels)
        out.append(mark(labels[label]) + body + "\n")
    # Files are often grouped by label. Read in that order, a mark would nearly always follow a
    # document of its own label, and the network learns to lean on the previous document instead of
    # the mark: measured, a held-out text of one label scored 1.85 nats/char alone but 3.9 after
    # fifteen of the other. Shuffled (seeded: the same order every pass), label changes are common
    # and the state after a mark depends on the label, not on what came before.
    random.Random(0).shuffle(out)
    return "".join(out)


def read_pairs(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(label, text) of every non-blank `label<TAB>text` line (evaluation of a labelled file)."""
    pairs = [split_line(line) for line in lines if line.strip()]
    return [(label, text) for label, text in pairs if text]


def check_label(label: str, labels: list[str]) -> int:
    """The index of a known label; an unknown one (or a label for an unlabelled run) is an error
    that lists what is known."""
    if not labels:
        raise GentextError("this run was not trained with labels (train with --condition label)")
    if label not in labels:
        shown = ", ".join(repr(x) for x in labels[:30]) + (" ..." if len(labels) > 30 else "")
        raise GentextError(f"unknown label {label!r}; this run knows {shown}")
    return labels.index(label)


def paired_documents(text: str) -> str:
    """Lines of `source<TAB>target[<TAB>ignored...]` (Anki/Tatoeba exports as downloaded) -> one
    document per pair, `source SOURCE_END target\n`, shuffled with a fixed seed (see
    labelled_documents); pairs with an empty side are skipped."""
    out = []
    for line in text.splitlines():
        if line.strip():
            source, target = split_line(line, "source")
            if source and target:
                out.append(source + SOURCE_END + target + "\n")
    random.Random(0).shuffle(out)
    return "".join(out)


def csv_as_tsv(text: str, columns: tuple[str, str], header: list[str]) -> str:
    """CSV rows -> `label<TAB>text` lines, the two columns named in the CSV's header row (`header`
    holds it once read: the first piece of the corpus starts with it). A row may not span lines."""
    import csv
    import io

    rows = list(csv.reader(io.StringIO(text)))
    if not header and rows:
        header.extend(cell.strip() for cell in rows.pop(0))
        missing = [c for c in columns if c not in header]
        if missing:
            raise GentextError(f"the CSV header has no column {missing[0]!r}; it has {', '.join(header)}")
    at = [header.index(c) for c in columns]
    lines = []
    for row in rows:
        if len(row) > max(at):
            label, body = (" ".join(row[i].split()) for i in at)  # tabs and newlines inside a cell become spaces
            lines.append(f"{label}\t{body}\n")
    return "".join(lines)


Pair = tuple[np.ndarray, np.ndarray]  # (source ids, target ids)


def pair_ids(tokenizer) -> tuple[int, int]:
    """(SOURCE_END id, END id): the decoder's start token and the newline that ends a target."""
    return int(tokenizer.encode(SOURCE_END)[0]), int(tokenizer.encode("\n")[0])


def cut_pairs(ids, end_id: int, source_end_id: int) -> list[Pair]:
    """(source ids, target ids) of every `source SOURCE_END target END` document in `ids`."""
    ids = np.asarray(ids, dtype=np.int64)
    ends = np.flatnonzero(ids == end_id)
    pairs, start = [], 0
    for end in ends:
        doc = ids[start:end]
        start = end + 1
        cut = np.flatnonzero(doc == source_end_id)
        if len(cut) and 0 < cut[0] < len(doc) - 1:
            pairs.append((doc[: cut[0]], doc[cut[0] + 1 :]))
    return pairs
