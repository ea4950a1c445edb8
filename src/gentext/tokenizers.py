"""Text <-> token ids. The tokenizer is saved as `tokenizer.json` in every run directory."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from .errors import GentextError


class Tokenizer(Protocol):
    level: str

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: list[int] | np.ndarray) -> str: ...

    def to_json(self) -> dict[str, Any]: ...


class CharTokenizer:
    """One token per Unicode code point (not per byte), vocabulary sorted by code point.

    Unknown characters are an error that names them: silently mapping them to id 0 (as classroom
    char-rnns do) makes a model continue a prompt it never saw.
    """

    level = "char"

    def __init__(self, chars: list[str]):
        if not chars:
            raise GentextError("a character vocabulary needs at least one character")
        if any(len(c) != 1 for c in chars):
            raise GentextError("tokenizer.json: every character-vocabulary entry must be one code point")
        self.chars = sorted(set(chars))
        if len(self.chars) != len(chars):
            raise GentextError("tokenizer.json: the character vocabulary has duplicates")
        self._codepoints = np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """Text to an int64 array of ids; characters outside the vocabulary raise GentextError."""
        codepoints = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        ids = np.searchsorted(self._codepoints, codepoints)
        ids_clipped = np.minimum(ids, len(self._codepoints) - 1)
        unknown = self._codepoints[ids_clipped] != codepoints
        if unknown.any():
            missing = sorted({chr(c) for c in codepoints[unknown].tolist()})
            shown = ", ".join(repr(c) for c in missing[:20]) + (" ..." if len(missing) > 20 else "")
            raise GentextError(f"the text has {len(missing)} character(s) the model has never seen: {shown}")
        return ids_clipped.astype(np.int64)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        chars = self.chars
        return "".join(chars[int(i)] for i in ids)

    def to_json(self) -> dict[str, Any]:
        return {"type": "char", "vocab": self.chars}


def fit_tokenizer(level: str, text: str) -> Tokenizer:
    if level == "char":
        return CharTokenizer.fit(text)
    raise GentextError(f"unknown tokenizer level {level!r}")


def tokenizer_from_json(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from `tokenizer.json` (plain JSON, never pickle)."""
    if not isinstance(data, dict) or "type" not in data:
        raise GentextError("tokenizer.json: not a gentext tokenizer (no 'type')")
    if data["type"] == "char":
        vocab = data.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(c, str) for c in vocab):
            raise GentextError("tokenizer.json: 'vocab' must be a list of characters")
        return CharTokenizer(vocab)
    raise GentextError(f"tokenizer.json: unknown tokenizer type {data['type']!r}")
