"""Prepare a run's text before anything is written: read and tokenize the corpus (through the token
cache), choose what the text needs where the user did not say (the kind, the dropout), and check that
a model can train on it. A condition (gentext/conditions) calls this for any text read as a stream of
documents and adds its own checks; pictures are read by training/captions.py."""

from __future__ import annotations

from typing import Any

from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.data.corpus import CorpusSource, Shaping, open_corpus
from gentext.data.tokencache import TokenData, fingerprint_and_fit, token_data
from gentext.data.tokenizers import fit_tokenizer
from gentext.errors import GentextError
from gentext.models import AUTO, check_kind, fitted_by_counting
from gentext.runconfig import DataRecord, RunConfig
from gentext.training.defaults import auto_distill, auto_dropout, auto_kind, auto_learning_rate, auto_width


def prepare_stream(
    shaping: Shaping, corpus_cfg: CorpusConfig, tok_cfg: TokenizerConfig, model_cfg: ModelConfig,
    train_cfg: TrainConfig, tok, progress: bool, origin=None,
) -> tuple[CorpusSource, Any, TokenData]:  # fmt: skip
    """Read and tokenize the corpus (fitting the tokenizer unless `tok` is given; growing the
    vocabulary of `origin`, a run being fine-tuned), fill in the kind, width, learning rate and
    dropout left to choose, and check a counting model's order against the text."""
    if model_cfg.kind != AUTO:
        check_kind(model_cfg.kind)  # an unknown --model fails before the corpus is read
    source = open_corpus(corpus_cfg, shaping)
    fit = None if tok is not None else (lambda pieces: fit_tokenizer(tok_cfg, pieces))
    if origin is not None and origin.model_config.kind == "pretrained":
        fit = lambda pieces: origin.tokenizer  # noqa: E731 -- a pretrained model keeps its own tokenizer whole
    elif origin is not None:
        fit = lambda pieces: origin.tokenizer.grown(fit_tokenizer(tok_cfg, pieces))  # noqa: E731
    content, fitted = fingerprint_and_fit(source, corpus_cfg, fit)
    if tok is None:
        tok = fitted
        if tok.vocab_size < 2:
            raise GentextError(
                f"the corpus has a single distinct token ({tok.decode([0])!r}); there is nothing to learn"
            )
        model_cfg.vocab_size = tok.vocab_size
    model_cfg.validate()
    data = token_data(source, corpus_cfg, tok, content, progress)
    if data.train is None:
        raise GentextError(f"the training text is empty ({', '.join(source.sources)})")
    if model_cfg.kind == AUTO:  # not given: the kind that fits the text and budget
        model_cfg.kind = auto_kind(len(data.train), tok_cfg.level, model_cfg, train_cfg)
    if model_cfg.hidden_size is None:  # not given, and chosen here (settings.new_configs)
        model_cfg.hidden_size = auto_width(len(data.train), model_cfg, train_cfg)
    counting = fitted_by_counting(check_kind(model_cfg.kind))
    if model_cfg.dropout is None:  # not given: fit it to the corpus and budget
        model_cfg.dropout = 0.0 if counting else auto_dropout(len(data.train), model_cfg, train_cfg)
    if train_cfg.distill is None:  # not given, in a run where it is chosen (settings.new_configs)
        train_cfg.distill = 0.0 if counting else auto_distill(len(data.train), tok.vocab_size, model_cfg, train_cfg)
    if train_cfg.learning_rate is None:  # not given: chosen with the kind, width and teacher (settings.new_configs)
        train_cfg.learning_rate = auto_learning_rate(model_cfg, train_cfg.distill)
    if counting and len(data.train) < model_cfg.order:  # an n-gram count needs n tokens
        raise GentextError(f"the training text is too short for --order {model_cfg.order}")
    return source, tok, data


def stream_record(
    corpus_cfg: CorpusConfig, tok_cfg: TokenizerConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
    source: CorpusSource, data: TokenData,
) -> RunConfig:  # fmt: skip
    """What config.json records of a run on a stream of documents (the result is added when training ends)."""
    val_tokens = 0 if data.val is None else len(data.val)
    return RunConfig(
        model=model_cfg,
        tokenizer=tok_cfg,
        train=train_cfg,
        corpus=corpus_cfg,
        sources=tuple(source.sources),
        labels=tuple(source.labels),  # --condition label: mark i stands for labels[i] (data/conditions.py)
        data=DataRecord(int(len(data.train)), int(val_tokens), data.key),  # the token cache's key: `gentext eval`
    )
