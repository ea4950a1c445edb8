"""How much of a generated text is copied from the training text (memorisation check)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Novelty:
    span: int  # window length in characters
    windows: int  # generated windows checked
    copied: int  # of which found verbatim in the training text
    longest_copy: int  # characters of the longest generated span found verbatim
    longest_example: str

    @property
    def copied_share(self) -> float:
        return self.copied / self.windows if self.windows else 0.0


def longest_copied_span(text: str, training: str) -> tuple[int, str]:
    """The longest substring of `text` that occurs in `training`, found greedily: a span only grows,
    so this needs about len(text) + answer substring searches."""
    best, example = 0, ""
    for start in range(len(text)):
        while start + best < len(text) and text[start : start + best + 1] in training:
            best += 1
            example = text[start : start + best]
    return best, example


def novelty(samples: list[str], training: str, span: int = 20) -> Novelty:
    """Share of `span`-character windows of the samples found verbatim in the training text."""
    windows = copied = 0
    longest, example = 0, ""
    for sample in samples:
        for start in range(0, max(len(sample) - span + 1, 0)):
            windows += 1
            copied += sample[start : start + span] in training
        length, text = longest_copied_span(sample, training)
        if length > longest:
            longest, example = length, text
    return Novelty(span=span, windows=windows, copied=copied, longest_copy=longest, longest_example=example)
