"""A run as config.json records it, typed: the four option configs it trained with and what the
run learned about itself (where its text came from, its labels, its token cache, the chain and
cache mixed in, the result). Frozen: a stage that adds to the record makes a new one
(`dataclasses.replace`), so no function changes a record it was handed.

`to_json` / `from_json` are the file's one reader and writer. Runs saved before a key existed
still load: a missing key reads as what its absence meant (`from_json` says which).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from gentext.config import FORMAT_VERSION, CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.errors import GentextError
from gentext.fields import from_dict, to_dict


@dataclass(frozen=True)
class DataRecord:
    """The tokens a run read; `cache_key` finds them in the token cache (`gentext eval RUN`)."""

    train_tokens: int = 0
    val_tokens: int = 0
    cache_key: str = ""


@dataclass(frozen=True)
class MixRecord:
    """The Kneser-Ney chain mixed with the network (models/mixture.py; chain.safetensors)."""

    order: int
    weight: float
    labels: int | None = None  # a labelled run: one chain per label (models/labelchain.py)


@dataclass(frozen=True)
class CacheRecord:
    """The neural cache over the network's last outputs (models/cache.py)."""

    window: int
    theta: float
    weight: float
    gate: float = 0.0  # the share its top token must hold for it to be heard; runs saved before it: 0, always
    similarity: str = "dot"  # "cosine" or "dot" (the outputs' product); runs saved before it: "dot"


@dataclass(frozen=True)
class TrainSummary:
    """What a training session reports: `gentext.train` returns `as_dict()`, `train --json` prints
    it, and config.json keeps it as `result` (without `out`). Defaults: what a run saved before a
    field existed reads as."""

    steps: int = 0
    tokens: int = 0
    seconds: float = 0.0
    eval_seconds: float = 0.0
    train_loss: float = math.nan
    val_loss: float | None = None
    val_bpc: float | None = None  # word level: <unk> as one token (`gentext eval` prices its spelling)
    level: str = "char"
    tokens_per_second: float = 0.0
    best_step: int = 0
    stopped_early: bool = False
    resumed_at: int | None = None
    session_seconds: float = 0.0
    parameters: int = 0
    fitted_by_counting: bool = False
    out: str | None = None
    cache: dict[str, Any] | None = None  # the neural cache's fit (training/caching.py)
    mixture: dict[str, Any] | None = None  # the chain's fit (training/mixing.py)
    sampled_val_loss: float | None = None  # the model as sampled, on held-out text nothing was fitted on
    init_from: dict[str, Any] | None = None  # fine-tuned: the origin and its held-out loss before and after

    def as_dict(self) -> dict[str, Any]:
        """Every field; what mixing and fine-tuning add only where they happened."""
        added = ("cache", "mixture", "sampled_val_loss", "init_from")
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in added or v is not None}

    def record(self) -> dict[str, Any]:
        """What config.json keeps: `as_dict()` without the folder it was written to."""
        return {k: v for k, v in self.as_dict().items() if k != "out"}


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    sources: tuple[str, ...] = ()  # what was read: files, or corpus:/builtin: names
    labels: tuple[str, ...] = ()  # --condition label: mark i stands for labels[i] (data/conditions.py)
    data: DataRecord | None = None  # pictures and pretrained models have no token stream
    image_size: int | None = None  # --condition image: the size every picture is read at
    init_from: dict[str, Any] | None = None  # fine-tuned: {"run": its folder, "tokens_added": n}
    mixture: MixRecord | None = None
    cache: CacheRecord | None = None
    result: TrainSummary | None = None  # the training summary, once training ended
    pretrained: str | None = None  # a pretrained model: the folder it was loaded from

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "model": to_dict(self.model),
            "tokenizer": to_dict(self.tokenizer),
            "train": to_dict(self.train),
            "corpus": {**to_dict(self.corpus), "sources": list(self.sources)},
            "labels": list(self.labels),
        }
        for name in ("data", "mixture", "cache"):
            record = getattr(self, name)
            if record is not None:
                out[name] = {k: v for k, v in dataclasses.asdict(record).items() if v is not None}
        for name in ("image_size", "init_from", "pretrained"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.result is not None:
            out["result"] = self.result.record()
        return out

    @classmethod
    def from_json(cls, data: Any, where: str = "config.json") -> RunConfig:
        """A saved record; unknown keys (a newer gentext's) and malformed parts are clear errors."""
        if not isinstance(data, dict):
            raise GentextError(f"{where}: expected a JSON object, got {type(data).__name__}")
        data = {k: v for k, v in data.items() if k not in SAVED_BEFORE}
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)} - {"format_version"})
        if unknown:
            raise GentextError(f"{where}: unknown keys {unknown} (written by a newer gentext?)")
        corpus = dict(data.get("corpus") or {})
        sources = corpus.pop("sources", None) or []
        return cls(
            model=from_dict(ModelConfig, data.get("model"), f"{where} 'model'"),
            tokenizer=from_dict(TokenizerConfig, data.get("tokenizer") or {}, f"{where} 'tokenizer'"),
            train=from_dict(TrainConfig, data.get("train") or {}, f"{where} 'train'"),
            corpus=from_dict(CorpusConfig, corpus, f"{where} 'corpus'"),
            sources=tuple(map(str, sources)),
            labels=tuple(map(str, data.get("labels") or ())),
            data=_record(DataRecord, data.get("data"), f"{where} 'data'"),
            image_size=data.get("image_size"),
            init_from=data.get("init_from"),
            mixture=_record(MixRecord, data.get("mixture"), f"{where} 'mixture'"),
            cache=_record(CacheRecord, data.get("cache"), f"{where} 'cache'"),
            result=_record(TrainSummary, data.get("result"), f"{where} 'result'"),
            pretrained=data.get("pretrained"),
        )


# Keys runs wrote before and no longer mean anything: the captioner's copy of corpus.condition.
SAVED_BEFORE = ("condition",)


def _record(cls: type, value: Any, where: str) -> Any:
    if value is None or value == {}:
        return None
    return from_dict(cls, value, where)
