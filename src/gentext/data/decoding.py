"""Incremental detokenization: token ids in, text out, one token at a time with O(1) work each.

Streaming must show exactly the text that decoding the whole sequence gives, without decoding the
whole sequence again at every token (O(n^2)). Each tokenizer hands out a decoder whose `step(id)`
returns the text that token adds and whose `flush()` returns what was held back at the end:

    char   every token is one code point: nothing is ever held back
    word   the space before a token depends on the previous token (and on whether a quote is
           open): the decoder keeps those two facts, and `WordTokenizer.decode` is built from it
    bpe    byte-level tokens may split a UTF-8 character: bytes go through Python's incremental
           UTF-8 decoder, which holds an incomplete sequence back until its last byte arrives
           (invalid bytes become U+FFFD, as in `tokenizers`' own lossy decoding)

A decoder can be primed with the prompt's ids (their text is discarded), so that what follows is
decoded in the prompt's context: `decode(prompt + ids) == decode(prompt) + steps + flush`.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Sequence
from functools import lru_cache

from gentext.data.conditions import is_reserved


class CharDecoder:
    def __init__(self, chars: Sequence[str]):
        self.chars = chars

    def step(self, token: int) -> str:
        return self.chars[token]

    def flush(self) -> str:
        return ""


# A dash joins what it stands between ("pale--they"), as in the books it is learned from.
NO_SPACE_BEFORE = set(".,;:!?)]}%'’”…") | {"--", "---", "...", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}
NO_SPACE_AFTER = set("([{“‘$") | {"--", "---"}


class WordDecoder:
    """Normal spacing around words and punctuation, one token at a time."""

    def __init__(self, vocab: Sequence[str], whitespace: bool):
        self.vocab, self.whitespace = vocab, whitespace
        self.prev, self.quote_open = "\n", False

    def _space(self, tok: str) -> bool:
        prev = self.prev
        if len(prev) == 1 and is_reserved(prev):  # after a label mark or the decoder's start: a text begins
            return False
        if self.whitespace:  # pre-tokenized text: one space between tokens, none around newlines
            return not (prev == "\n" or tok == "\n")
        if tok == '"':
            space = not self.quote_open and prev != "\n"  # an opening quote gets the space, a closing one none
            self.quote_open = not self.quote_open
            return space
        if prev == '"' and self.quote_open:
            return False  # right after an opening quote
        return not (prev == "\n" or tok == "\n" or tok in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER)

    def step(self, token: int) -> str:
        tok = self.vocab[token]
        text = (" " if self._space(tok) else "") + tok
        self.prev = tok
        return text

    def flush(self) -> str:
        return ""


@lru_cache(maxsize=1)
def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet (used by `tokenizers`' ByteLevel): printable bytes stand for
    themselves, the other 68 are shifted to code points 256 and up. Character -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping, shift = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[chr(byte)] = byte
        else:
            mapping[chr(256 + shift)] = byte
            shift += 1
    return mapping


def byte_level_tokens(tokens: Iterable[str]) -> list[bytes]:
    """The bytes each byte-level token stands for, in id order."""
    alphabet = _byte_level_alphabet()
    return [bytes(alphabet[c] for c in token) for token in tokens]


class ByteDecoder:
    def __init__(self, token_bytes: Sequence[bytes]):
        self.token_bytes = token_bytes
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def step(self, token: int) -> str:
        return self.utf8.decode(self.token_bytes[token])

    def flush(self) -> str:
        return self.utf8.decode(b"", final=True)


def primed(decoder, prompt_ids: Iterable[int]):
    """`decoder` after the prompt's ids, their text discarded."""
    for token in prompt_ids:
        decoder.step(int(token))
    return decoder


def decode_with(decoder, ids: Iterable[int]) -> str:
    """The whole text of `ids` through one decoder."""
    return "".join(decoder.step(int(i)) for i in ids) + decoder.flush()
