"""What a request's listener gathers: each sample's text, its tokens' log-probabilities when asked,
and how it ended (`Collector`), given back by the Python API as `Completion`s."""

from __future__ import annotations

from dataclasses import dataclass

from gentext.errors import GentextError
from gentext.inference.events import Done, Failed, Text


@dataclass
class Completion:
    """One sample of `TextModel.complete`."""

    text: str
    finish_reason: str  # stop, length, time, cancelled (events.Done)
    tokens: int
    logprobs: list[dict] | None = None  # with logprobs=N, per token: {"id", "logprob", "top": [(id, logprob)]}


class Collector:
    """A listener that gathers each sample's text and how the request ended."""

    def __init__(self):
        self.pieces: list[list[str]] = []
        self.scored: list[list[dict]] = []
        self.end: Done | Failed | None = None
        self.taken = 0

    def __call__(self, event) -> None:
        if isinstance(event, Text):
            if not self.pieces:
                self.pieces = [[] for _ in event.pieces]
                self.scored = [[] for _ in event.pieces]
            for pieces, piece in zip(self.pieces, event.pieces, strict=True):
                pieces.append(piece)
            for records, new in zip(self.scored, event.logprobs, strict=False):
                records.extend(new)
        else:
            self.end = event

    def completions(self, prompt: str) -> list[Completion]:
        done = self.end
        texts = self.texts(prompt) if self.pieces else [prompt] * len(done.reasons)
        scored = self.scored or [None] * len(texts)
        return [
            Completion(text, reason, tokens, records)
            for text, reason, tokens, records in zip(texts, done.reasons, done.tokens, scored, strict=True)
        ]

    def texts(self, prompt: str) -> list[str]:
        return [prompt + "".join(pieces) for pieces in self.pieces]

    def take(self) -> str:
        """The first sample's text since the last call (streaming)."""
        if not self.pieces:
            return ""
        new = self.pieces[0][self.taken :]
        self.taken += len(new)
        return "".join(new)

    def raise_failure(self) -> None:
        if isinstance(self.end, Failed):
            raise self.end.error or GentextError(self.end.message)


def readable(records: list[dict], tokenizer) -> list[dict]:
    """Token records with each id written as its text: {"token", "logprob", "top": {token: logprob}}."""
    decode = tokenizer.decode
    return [
        {"token": decode([r["id"]]), "logprob": r["logprob"], "top": {decode([i]): v for i, v in r["top"] or []}}
        for r in records
    ]
