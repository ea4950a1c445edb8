"""The conditions a run can generate from (`--condition`), one class per file (conditions/base.py
says what a condition decides); adding one is its file and a line in CONDITIONS."""

from __future__ import annotations

from gentext.conditions.base import Condition
from gentext.conditions.image import Pictured
from gentext.conditions.label import Labelled
from gentext.conditions.source import Paired
from gentext.config import CorpusConfig
from gentext.errors import GentextError
from gentext.runconfig import RunConfig

CONDITIONS: dict[str, type[Condition]] = {
    Condition.name: Condition,
    Labelled.name: Labelled,
    Paired.name: Paired,
    Pictured.name: Pictured,
}


def condition_class(name: str) -> type[Condition]:
    if name not in CONDITIONS:
        raise GentextError(f"--condition must be one of {', '.join(CONDITIONS)}, got {name!r}")
    return CONDITIONS[name]


def condition_for(corpus_cfg: CorpusConfig, tokenizer_flags: list[str] = ()) -> Condition:
    """A new run's condition, its settings checked and completed (`tokenizer_flags`: the
    tokenizer options the user gave)."""
    condition = condition_class(corpus_cfg.condition)()
    condition.configure(corpus_cfg, list(tokenizer_flags))
    return condition


def condition_of(run: RunConfig) -> Condition:
    """A saved run's condition, with what it recorded (labels, picture size)."""
    return condition_class(run.corpus.condition)(run)
