"""What a run generates *from*, as one object that every stage of the run asks.

`--condition` names it: none (plain text, from nothing but its prompt), label, source or image.
A condition decides how the corpus is shaped into documents and held out, which feed trains on it,
what the chain and cache may add after training, how a generation is primed and which ids are never
sampled, how a run is evaluated and what its evaluation prints. `Condition` here is plain text; each
other condition is one file in this package that overrides what it changes, plus one line in the
registry (`conditions/__init__.py`). The stages below (data, training, inference) are handed the
run's condition object and never compare condition names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.data.corpus import Shaping, read_text
from gentext.data.dataset import BPTTBatches
from gentext.errors import GentextError
from gentext.fields import check
from gentext.inference.jobs import Prompt
from gentext.models import check_kind, fitted_by_counting
from gentext.runconfig import RunConfig
from gentext.training import distill
from gentext.training.defaults import auto_weight_decay
from gentext.training.feeds import WindowFeed
from gentext.training.mixing import Mixing
from gentext.training.preparation import prepare_stream, stream_record

REFUSED = {  # an input given to a run that does not generate from it
    "label": "this run was not trained with labels (train with --condition label)",
    "source": "this run was not trained on pairs (train with --model seq2seq --condition source)",
    "image": "this run does not caption pictures (train one with --condition image)",
}


class Condition(Shaping):
    """Plain text: generated from its prompt alone."""

    name: ClassVar[str] = "none"
    reads: ClassVar[str] = "text"  # what its corpus holds, in words
    takes: ClassVar[str | None] = None  # the generate() argument it generates from: label, source or image
    one_stream: ClassVar[bool] = True  # the text is one stream: a neural cache, dynamic evaluation
    text_figures: ClassVar[bool] = True  # evaluation reports loss, perplexity and bits/char of a text
    headline: ClassVar[tuple[str, ...]] = ()  # `compare`: this condition's own columns (text figures: none)
    length_penalty: ClassVar[float] = 1.0  # beams' default (a source or picture sets the length: 0)
    marks_documents: ClassVar[bool] = False  # a token read once a document (a label's mark, a source's end)
    teachable: ClassVar[bool] = True  # its feed reads one token stream, which a chain can teach (--distill)

    def __init__(self, run: RunConfig | None = None):
        """`run`: a saved run's record, for what the condition kept there (labels, sizes)."""
        self.labels: list[str] = []

    # -- settings -------------------------------------------------------------------------------
    def configure(self, corpus_cfg: CorpusConfig, tokenizer_flags: list[str]) -> None:
        """Check and complete the run's settings for this condition (`tokenizer_flags`: the
        tokenizer options the user gave)."""
        check(corpus_cfg.label_column is None, "--label-column needs --condition label")
        if self.documents:  # a line is a document: it ends, and the next one starts from its condition
            corpus_cfg.mode = "lines"

    # -- training -------------------------------------------------------------------------------
    def prepare(
        self, corpus_cfg: CorpusConfig, tok_cfg: TokenizerConfig, model_cfg: ModelConfig, train_cfg: TrainConfig,
        tok, progress: bool, origin=None,
    ) -> tuple[Any, Any, RunConfig]:  # fmt: skip
        """Read the text, check a model can train on it, before anything is written: the
        tokenizer, the data the feed reads and what config.json records."""
        source, tok, data = prepare_stream(self, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress, origin)
        if train_cfg.weight_decay is None:  # not given: what the tokens take (recorded in config.json)
            train_cfg.weight_decay = auto_weight_decay(self.marks_documents or tok.level != "char", train_cfg)
        if not fitted_by_counting(check_kind(model_cfg.kind)):
            self.check_trainable(tok, data, train_cfg)
        return tok, data, stream_record(corpus_cfg, tok_cfg, model_cfg, train_cfg, source, data)

    def check_trainable(self, tok, data, train_cfg: TrainConfig) -> None:
        BPTTBatches(data.train, train_cfg.batch_size, train_cfg.seq_len)  # a too-short corpus fails here

    def feed(self, tok, data, train_cfg: TrainConfig, progress: bool = False) -> Callable[[range], Any]:
        """The training loop's feed maker (rows -> feed; training/feeds.py), with a teacher chain's
        predictions where --distill asks for them (training/distill.py)."""
        teacher = distill.teacher(data.train, tok.vocab_size, progress) if train_cfg.distill else None
        return lambda rows: WindowFeed(data.train, data.val, train_cfg, rows, data.key, teacher)

    def stream_data(self, data) -> Any | None:
        """The prepared data as a token stream (bits per character, mixing), or None."""
        return data

    def mixing(self, tok) -> Mixing:
        return Mixing(cache=True, chain=True, level=tok.level)

    # -- generation -----------------------------------------------------------------------------
    def never_sampled(self, tok) -> list[int]:
        """Ids that stand for the condition, never generated."""
        return []

    def decoder_start(self, tok) -> int | None:
        """An attention decoder's first input (a source or picture condition), else None."""
        return None

    def prompt(self, model, prompt: str, label=None, source=None, image=None) -> Prompt:
        """What primes the network: the prompt's ids, or (no prompt) a newline, the start of a line."""
        self.refuse_inputs(label=label, source=source, image=image)
        if prompt:
            unknown = model.tokenizer.unknown_words(prompt)
            if unknown:
                model.warn_unknown(unknown)
            return Prompt(model.tokenizer.encode(prompt).tolist())
        try:
            return Prompt(model.tokenizer.encode("\n").tolist())
        except GentextError:
            return Prompt([0])

    def check_prompt(self, model, prompt: str, label=None, source=None) -> None:
        """Refuse, before any work, a prompt or input this run cannot generate from."""
        self.prompt(model, prompt, label, source)

    def refuse_inputs(self, **given: Any) -> None:
        """An input this condition does not generate from is an error that says what would take it."""
        for name, value in given.items():
            if value is not None and name != self.takes:
                raise GentextError(REFUSED[name])

    # -- evaluation -----------------------------------------------------------------------------
    def evaluate(self, model, paths: list[str] | None, text: str | None, **options: Any) -> dict[str, Any]:
        """Loss, perplexity and bits per character (Measures.stream_figures) on `text`, the files
        in `paths`, or the run's held-out split (its ids from the token cache, when it is there)."""
        if text is None and not paths:
            held = model.held_out_ids()
            if held is not None:
                return model.held_out_figures(held, **options)
        return model.stream_figures(self.read(model, paths, text), **options)

    def read(self, model, paths: list[str] | None, text: str | None) -> str:
        """The text to evaluate: `text`, the files in `paths`, or the run's held-out split."""
        if text is not None:
            return text
        return read_text(paths) if paths else model.held_out_text()

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        """What `gentext eval` prints of this condition's own figures, after the text's."""
        return []
