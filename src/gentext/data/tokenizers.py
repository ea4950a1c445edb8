"""Text <-> token ids. The tokenizer is saved as `tokenizer.json` in every run directory."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Protocol

import numpy as np

from gentext.data.bpe import BPETokenizer
from gentext.data.decoding import CharDecoder, WordDecoder, decode_with
from gentext.errors import GentextError


class Tokenizer(Protocol):
    level: str
    suppressed_ids: list[int]  # ids generation never samples unless allowed (<unk>)

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        """Ids as `dtype` (the token cache asks for its file's uint8/16/32 directly)."""
        ...

    def decode(self, ids: list[int] | np.ndarray) -> str: ...

    def decoder(self):
        """A fresh incremental decoder (`decoding.py`): step(id) -> new text, flush() -> the rest."""
        ...

    def unknown_chars(self, text: str) -> set[str]:
        """Characters of `text` no token can stand for (only a character vocabulary has any)."""
        ...

    def unknown_words(self, text: str) -> list[str]:
        """Words of `text` read as <unk> (only a word vocabulary has any)."""
        ...

    def to_json(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per Unicode code point (not per byte). A fitted vocabulary is sorted by code point;
    one grown for fine-tuning keeps the old ids and appends the new characters (`grown`).

    Unknown characters are an error that names them: silently mapping them to id 0 (as classroom
    char-rnns do) makes a model continue a prompt it never saw.
    """

    level = "char"
    suppressed_ids: list[int] = []  # nothing is withheld from generation

    def __init__(self, chars: list[str]):
        if not chars:
            raise GentextError("a character vocabulary needs at least one character")
        if any(len(c) != 1 for c in chars):
            raise GentextError("tokenizer.json: every character-vocabulary entry must be one code point")
        if len(set(chars)) != len(chars):
            raise GentextError("tokenizer.json: the character vocabulary has duplicates")
        self.chars = list(chars)  # id order
        codepoints = np.array([ord(c) for c in self.chars], dtype=np.int64)
        # code point -> id, -1 where no character: encoding is one gather (a binary search per
        # character was several times slower: RESULTS.md, "A corpus larger than memory")
        self._ids = np.full(int(codepoints.max()) + 1, -1, dtype=np.int64)
        self._ids[codepoints] = np.arange(len(codepoints))
        # ASCII text through `bytes.translate` (GB/s): each byte -> its id, 255 = no such character
        self._bytes = None
        if len(self.chars) < 255:
            table = bytearray(b"\xff" * 256)
            for i, c in enumerate(self.chars):
                if ord(c) < 128:
                    table[ord(c)] = i
            self._bytes = bytes(table)

    def grown(self, other: CharTokenizer) -> CharTokenizer:
        """This vocabulary with `other`'s new characters appended: old ids keep their meaning."""
        return CharTokenizer([*self.chars, *(c for c in other.chars if c not in set(self.chars))])

    @classmethod
    def fit(cls, text: str | Iterable[str]) -> CharTokenizer:
        seen = np.zeros(0x110000, dtype=bool)  # one flag per code point: a GB of text in seconds
        for piece in _pieces(text):
            seen[np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)] = True
        return cls([chr(c) for c in np.flatnonzero(seen)])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        """Text to an array of ids; characters outside the vocabulary raise GentextError."""
        if self._bytes is not None and text.isascii():  # isascii is a flag of the string: O(1)
            ids = text.encode("ascii").translate(self._bytes)
            if b"\xff" in ids:
                self._unknown(text)
            return np.frombuffer(ids, dtype=np.uint8).astype(dtype)
        codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if codepoints.size and int(codepoints.max()) >= len(self._ids):
            self._unknown(text)
        ids = self._ids[codepoints]
        if ids.size and ids.min() < 0:
            self._unknown(text)
        return ids.astype(dtype, copy=False)

    def _unknown(self, text: str) -> None:
        missing = sorted(self.unknown_chars(text))
        shown = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
        raise GentextError(f"the text has {len(missing)} character(s) the model has never seen: {shown}")

    def decode(self, ids: list[int] | np.ndarray) -> str:
        # a block of ids at a time: Python ints for 2M ids at once would add ~70 MB to a big run's peak
        ids, look = np.asarray(ids, dtype=np.int64), self.chars.__getitem__
        return "".join("".join(map(look, ids[i : i + 65536].tolist())) for i in range(0, len(ids), 65536))

    def decoder(self) -> CharDecoder:
        return CharDecoder(self.chars)

    def unknown_chars(self, text: str) -> set[str]:
        return set(text) - set(self.chars)

    def unknown_words(self, text: str) -> list[str]:
        return []  # a word of known characters is spelled in them

    def to_json(self) -> dict[str, Any]:
        return {"type": "char", "vocab": self.chars}


def _pieces(text: str | Iterable[str]) -> Iterable[str]:
    """Tokenizers fit on one string or on a stream of pieces (each ending after a newline)."""
    return [text] if isinstance(text, str) else text


def fit_tokenizer(config, pieces: Iterable[tuple[bool, str]]) -> Tokenizer:
    """A tokenizer as a TokenizerConfig says, from (is_validation, text) pieces read once.
    Characters come from all the text, so validation never meets an unknown one; words and merges
    only from the training text (the rest is <unk>, as usual)."""
    if config.level == "char":
        return CharTokenizer.fit(text for _, text in pieces)
    train = (text for is_val, text in pieces if not is_val)
    if config.level == "word":
        return WordTokenizer.fit(train, config.tokenize, config.vocab_size, config.min_count)
    if config.level == "bpe":
        return BPETokenizer.fit(train, config.vocab_size)
    raise GentextError(f"unknown tokenizer level {config.level!r}")


def tokenizer_from_json(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `tokenizer.json` (plain JSON, never pickle)."""
    if not isinstance(data, dict) or "type" not in data:
        raise GentextError("tokenizer.json: not a gentext tokenizer (no 'type')")
    if data["type"] == "char":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
            raise GentextError("tokenizer.json: 'vocab' must be a list of characters")
        return CharTokenizer(vocab)
    if data["type"] == "word":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(w, str) for w in vocab):
            raise GentextError("tokenizer.json: 'vocab' must be a list of words")
        if data.get("tokenize", "regex") not in ("regex", "whitespace"):
            raise GentextError(f"tokenizer.json: unknown tokenize mode {data.get('tokenize')!r}")
        rare = data.get("rare_words", [])
        if not isinstance(rare, list) or not all(isinstance(w, str) for w in rare):
            raise GentextError("tokenizer.json: 'rare_words' must be a list of words")
        return WordTokenizer(vocab, data.get("tokenize", "regex"), data.get("pattern", 1), rare)
    if data["type"] == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return BPETokenizer(HFTokenizer.from_str(json.dumps(data["tokenizers"])))
        except Exception as exc:  # the library raises its own exception types for bad JSON
            raise GentextError(f"tokenizer.json: not a valid BPE tokenizer ({exc})") from None
    raise GentextError(f"tokenizer.json: unknown tokenizer type {data['type']!r}")


# Words (with inner apostrophes), a newline, a dash or ellipsis, or one punctuation mark. Version 1
# (runs saved before dashes were kept whole: "--" was "- -") is kept so those runs encode as trained.
WORD_PATTERNS = {
    1: re.compile(r"\n|\w+(?:['’]\w+)*|[^\w\s]"),
    2: re.compile(r"\n|\w+(?:['’]\w+)*|-{2,}|\.{3}|[^\w\s]"),
}
UNK = "<unk>"
RESERVED = re.compile("([\U000f0000-\U000ffffd])")  # data/conditions.py: label marks, SOURCE_END


class WordTokenizer:
    """Words and punctuation as tokens, case kept, detokenized back to normally spaced text.

    `regex` splits "Hello, world!" into [Hello, ",", world, "!"]; `whitespace` splits on spaces only,
    for corpora that are already tokenized (PTB, WikiText) and bring their own <unk>. Newlines are
    tokens in both, so line structure survives. Words outside the vocabulary become <unk>, which
    is explicit in the vocabulary (never a silent id 0).
    """

    level = "word"

    RARE_WORDS_KEPT = 100_000

    def __init__(self, vocab: list[str], tokenize: str = "regex", pattern: int = 2, rare_words: list[str] = ()):
        if pattern not in WORD_PATTERNS:
            raise GentextError(f"tokenizer.json: unknown word pattern version {pattern!r}")
        if UNK not in vocab:
            raise GentextError(f"tokenizer.json: a word vocabulary must contain {UNK}")
        if len(set(vocab)) != len(vocab):
            raise GentextError("tokenizer.json: the word vocabulary has duplicates")
        self.vocab, self.tokenize, self.pattern = list(vocab), tokenize, pattern
        # Training words the vocabulary left out: with the vocabulary, what `<unk>` is spelled from
        # when bits per character are made comparable across levels (models/spelling.py).
        self.rare_words = list(rare_words)
        self.index = {word: i for i, word in enumerate(self.vocab)}
        self.unk_id = self.index[UNK]

    def split(self, text: str) -> list[str]:
        if self.tokenize == "whitespace":
            if RESERVED.search(text):  # a label mark or source end is a token of its own, never glued to a word
                text = RESERVED.sub(r" \1 ", text)
            return [tok for line in text.split("\n") for tok in (*line.split(), "\n")][:-1]
        return WORD_PATTERNS[self.pattern].findall(text)

    @classmethod
    def fit(
        cls, text: str | Iterable[str], tokenize: str = "regex", vocab_size: int | None = None, min_count: int = 1
    ) -> WordTokenizer:
        splitter, counts = cls([UNK], tokenize), Counter()
        for piece in _pieces(text):  # pieces end at newlines: no word is cut
            counts.update(splitter.split(piece))
        counts.pop(UNK, None)
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        kept = sum(1 for w in ranked if counts[w] >= min_count)
        if vocab_size is not None:
            kept = min(kept, vocab_size - 1)
        return cls([UNK, *ranked[:kept]], tokenize, rare_words=ranked[kept : kept + cls.RARE_WORDS_KEPT])

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def suppressed_ids(self) -> list[int]:
        return [self.unk_id]

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        return np.array([self.index.get(tok, self.unk_id) for tok in self.split(text)], dtype=dtype)

    def grown(self, other: WordTokenizer) -> WordTokenizer:
        """This vocabulary with `other`'s new words appended (in its order): old ids keep their meaning."""
        known = set(self.vocab)
        vocab = [*self.vocab, *(w for w in other.vocab if w not in known)]
        rare = [w for w in dict.fromkeys([*self.rare_words, *other.rare_words]) if w not in set(vocab)]
        return WordTokenizer(vocab, self.tokenize, self.pattern, rare[: self.RARE_WORDS_KEPT])

    def unknown_words(self, text: str) -> list[str]:
        return sorted({tok for tok in self.split(text) if tok not in self.index})

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return decode_with(self.decoder(), ids)

    def decoder(self) -> WordDecoder:
        return WordDecoder(self.vocab, whitespace=self.tokenize == "whitespace")

    def unknown_chars(self, text: str) -> set[str]:
        return set()  # an unknown word is <unk>, which the model predicts like any word

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "word",
            "tokenize": self.tokenize,
            "pattern": self.pattern,
            "unk": UNK,
            "vocab": self.vocab,
            "rare_words": self.rare_words,
        }
