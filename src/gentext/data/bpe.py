"""Byte-level BPE (as GPT-2) through Hugging Face `tokenizers`: one of the three tokenizer levels
(data/tokenizers.py reads and fits them all)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

from gentext.data.decoding import ByteDecoder, byte_level_tokens


class BPETokenizer:
    """Byte-level BPE (as GPT-2), trained on the corpus with Hugging Face `tokenizers`. Any text
    encodes exactly (every byte is in the base alphabet), so prompts never meet an unknown token.
    Stored as the `tokenizers` JSON format inside tokenizer.json."""

    level = "bpe"

    def __init__(self, hf_tokenizer):
        self.hf = hf_tokenizer
        self._token_bytes: list[bytes] | None = None

    @classmethod
    def fit(cls, text: str | Iterable[str], vocab_size: int | None = None) -> BPETokenizer:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

        hf = Tokenizer(models.BPE())
        # Each newline stays a token of its own: in lines mode it is the end-of-text token.
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex("\n"), behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size or 2000, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
        )
        # Feed the text in pieces: the trainer's pre-tokenizer works per string.
        chunk = 1 << 20
        hf.train_from_iterator(
            (p[i : i + chunk] for p in ([text] if isinstance(text, str) else text) for i in range(0, len(p), chunk)),
            trainer,
        )
        return cls(hf)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    @property
    def suppressed_ids(self) -> list[int]:
        return []

    def encode(self, text: str, dtype=np.int64) -> np.ndarray:
        return np.array(self.hf.encode(text).ids, dtype=dtype)

    def decode(self, ids: list[int] | np.ndarray) -> str:
        return self.hf.decode([int(i) for i in ids])

    def unknown_chars(self, text: str) -> set[str]:
        return set()  # every byte is in the base alphabet

    def unknown_words(self, text: str) -> list[str]:
        return []  # every word is spelled in bytes

    def grown(self, other: BPETokenizer) -> BPETokenizer:
        """Byte-level BPE already encodes any text: fine-tuning keeps the merges as they are."""
        return self

    def decoder(self) -> ByteDecoder:
        if self._token_bytes is None:  # built on first use: a big vocabulary takes a moment
            self._token_bytes = byte_level_tokens(self.hf.id_to_token(i) for i in range(self.vocab_size))
        return ByteDecoder(self._token_bytes)

    def to_json(self) -> dict[str, Any]:
        return {"type": "bpe", "tokenizers": json.loads(self.hf.to_str())}
