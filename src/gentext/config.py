"""Typed configs for every pipeline stage.

Each dataclass validates itself with messages that say what to do; the CLI builds them from flags,
the API from keyword arguments, and `config.json` in a run directory stores them as plain JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import GentextError

FORMAT_VERSION = 1
MAX_ORDER = 20
LEVELS = ("char", "word", "bpe")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adamw", "sgd")

# Loading a config from someone else's run must not allocate terabytes: sizes past these are refused.
MAX_VOCAB = 5_000_000
MAX_HIDDEN = 16_384
MAX_LAYERS = 64


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise GentextError(message)


@dataclass
class CorpusConfig:
    """Where the text comes from and how it is split."""

    paths: list[str] = field(default_factory=list)  # files, directories or "-"; empty: the built-in corpus
    builtin: str = "python-docs"  # used when `paths` is empty: a built-in or a named (downloaded) corpus
    offline: bool = False  # never download a named corpus
    glob: str = "*.txt"  # files taken from directories
    val_fraction: float = 0.1  # the last fraction of the text is held out for validation
    val_path: str | None = None  # a separate validation file instead of the split
    encoding_errors: str = "strict"  # "strict" (error on invalid UTF-8) or "replace"
    mode: str = "stream"  # "stream": one long text; "lines": each non-empty line is a document

    def validate(self) -> None:
        _check(self.mode in ("stream", "lines"), f"--mode must be stream or lines, got {self.mode!r}")
        _check(0.0 <= self.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        _check(
            self.encoding_errors in ("strict", "replace"),
            f"--encoding-errors must be 'strict' or 'replace', got {self.encoding_errors!r}",
        )


@dataclass
class TokenizerConfig:
    """How text becomes token ids."""

    level: str = "char"  # char | word
    tokenize: str = "regex"  # word level: "regex" splits words and punctuation; "whitespace" for pre-tokenized text
    vocab_size: int | None = None  # word: keep the most frequent words (the rest become <unk>); bpe: merges target
    min_count: int = 1  # word level: words seen fewer times become <unk>

    def validate(self) -> None:
        _check(self.level in LEVELS, f"--level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        _check(
            self.tokenize in ("regex", "whitespace"), f"--tokenize must be regex or whitespace, got {self.tokenize!r}"
        )
        _check(self.vocab_size is None or self.vocab_size >= 2, f"--vocab-size must be >= 2, got {self.vocab_size}")
        _check(self.min_count >= 1, f"--min-count must be >= 1, got {self.min_count}")


@dataclass
class ModelConfig:
    """The network. `vocab_size` is filled in from the tokenizer."""

    kind: str = "lstm"  # lstm | gru | rnn | markov
    vocab_size: int = 0
    embed_size: int = 64
    hidden_size: int = 256
    num_layers: int = 2
    dropout: float = 0.0
    tie_weights: bool = False  # share the embedding and output matrices (needs embed_size == hidden_size)
    order: int = 6  # markov only: tokens of context + 1 (an n-gram model of order n)
    adaptive_cutoffs: list[int] = field(default_factory=list)  # adaptive softmax cluster bounds; empty: full

    def validate(self) -> None:
        from .models import REGISTRY  # the registry is the list of kinds (imported here: models import config)

        _check(self.kind in REGISTRY, f"--model must be one of {', '.join(REGISTRY)}, got {self.kind!r}")
        _check(0 < self.vocab_size <= MAX_VOCAB, f"vocab_size must be in 1..{MAX_VOCAB}, got {self.vocab_size}")
        _check(0 < self.embed_size <= MAX_HIDDEN, f"--embed-size must be in 1..{MAX_HIDDEN}, got {self.embed_size}")
        _check(0 < self.hidden_size <= MAX_HIDDEN, f"--hidden-size must be in 1..{MAX_HIDDEN}, got {self.hidden_size}")
        _check(0 < self.num_layers <= MAX_LAYERS, f"--num-layers must be in 1..{MAX_LAYERS}, got {self.num_layers}")
        _check(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        _check(0 < self.order <= MAX_ORDER, f"--order must be in 1..{MAX_ORDER}, got {self.order}")
        if self.adaptive_cutoffs:
            c = self.adaptive_cutoffs
            _check(self.kind != "markov", "--adaptive-softmax is for networks, not --model markov")
            _check(
                all(a < b for a, b in zip([0, *c], [*c, self.vocab_size], strict=True)),
                "--adaptive-softmax cutoffs must increase and lie between 0 and the vocabulary size "
                f"({self.vocab_size}), got {','.join(map(str, c))}",
            )
        if self.tie_weights:
            _check(
                self.embed_size == self.hidden_size,
                "--tie-weights needs --embed-size equal to --hidden-size "
                f"(got {self.embed_size} and {self.hidden_size})",
            )


@dataclass
class TrainConfig:
    """The optimisation. Training stops at the first of steps, epochs and time_limit that is set."""

    batch_size: int = 16  # parallel streams (small batches: more updates per minute on a CPU)
    seq_len: int = 64  # BPTT window, in tokens
    learning_rate: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine schedule ends at learning_rate * min_lr_ratio
    warmup_steps: int = 50
    weight_decay: float | None = None  # None: 0.01 with AdamW (decoupled), 0 with SGD (where it is L2)
    optimizer: str = "adamw"  # adamw | sgd (plain SGD at a high rate, as Zaremba et al. for word LSTMs)
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    steps: int | None = None
    epochs: float | None = None
    time_limit: float | None = None  # seconds
    eval_every: int = 200  # steps between validations (and checkpoints)
    eval_tokens: int = 50_000  # periodic evaluations read the first this-many validation tokens
    save_every: int = 200  # steps between resumable checkpoints (train_state.safetensors)
    state_reset: float = 0.05  # chance that a row starts a window from a zero state (as generation does)
    patience: int | None = None  # stop after this many evaluations without a better validation loss
    tensorboard: bool = False  # also log scalars to RUN/tensorboard
    seed: int = 1337
    device: str = "auto"
    precision: str = "auto"

    def validate(self) -> None:
        _check(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")
        _check(self.seq_len > 0, f"--seq-len must be positive, got {self.seq_len}")
        _check(
            self.learning_rate > 0 and math.isfinite(self.learning_rate),
            f"--lr must be a positive number, got {self.learning_rate}",
        )
        _check(0.0 <= self.min_lr_ratio <= 1.0, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        _check(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        _check(
            self.weight_decay is None or self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"
        )
        _check(self.optimizer in OPTIMIZERS, f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        _check(self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}")
        _check(self.steps is None or self.steps > 0, f"--steps must be positive, got {self.steps}")
        _check(self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        _check(self.time_limit is None or self.time_limit > 0, f"--time-limit must be positive, got {self.time_limit}")
        _check(self.eval_every > 0, f"--eval-every must be positive, got {self.eval_every}")
        _check(self.save_every > 0, f"--save-every must be positive, got {self.save_every}")
        _check(0.0 <= self.state_reset <= 1.0, f"--state-reset must be in [0, 1], got {self.state_reset}")
        _check(self.patience is None or self.patience > 0, f"--patience must be positive, got {self.patience}")
        _check(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        _check(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )

    def with_default_stop(self) -> TrainConfig:
        """A copy that stops somewhere: 2000 steps when no limit was given."""
        if self.steps is None and self.epochs is None and self.time_limit is None:
            return dataclasses.replace(self, steps=2000)
        return self


@dataclass
class SampleConfig:
    """Generation settings; names follow Hugging Face `generate`. Each is a no-op at its default."""

    max_new_tokens: int = 200
    temperature: float = 0.8  # 0 means greedy
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1 disables
    min_p: float = 0.0  # 0 disables
    repetition_penalty: float = 1.0  # 1 disables; > 1 discourages tokens already in the text
    no_repeat_ngram_size: int = 0  # 0 disables; n forbids repeating any n-gram
    stop: list[str] = field(default_factory=list)  # cut each sample before the first stop string
    max_time: float | None = None  # seconds
    num_beams: int = 0  # 0 samples; >= 1 runs deterministic beam search (1 is greedy)
    length_penalty: float = 1.0  # beam scores are log-prob / length ** length_penalty
    allow_unk: bool = False  # word level: may <unk> be generated?
    num_samples: int = 1
    seed: int | None = None

    def validate(self) -> None:
        _check(self.max_new_tokens >= 0, f"--max-new-tokens must be >= 0, got {self.max_new_tokens}")
        _check(
            self.temperature >= 0 and math.isfinite(self.temperature),
            f"--temperature must be >= 0 (0 is greedy), got {self.temperature}",
        )
        _check(self.top_k >= 0, f"--top-k must be >= 0 (0 disables it), got {self.top_k}")
        _check(0.0 < self.top_p <= 1.0, f"--top-p must be in (0, 1], got {self.top_p}")
        _check(0.0 <= self.min_p < 1.0, f"--min-p must be in [0, 1), got {self.min_p}")
        _check(
            self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
            f"--repetition-penalty must be positive (1 disables it), got {self.repetition_penalty}",
        )
        _check(self.no_repeat_ngram_size >= 0, f"--no-repeat-ngram-size must be >= 0, got {self.no_repeat_ngram_size}")
        _check(all(isinstance(s, str) and s for s in self.stop), "--stop strings must be non-empty")
        _check(self.max_time is None or self.max_time > 0, f"--max-time must be positive, got {self.max_time}")
        _check(self.num_beams >= 0, f"--num-beams must be >= 0, got {self.num_beams}")
        _check(self.num_samples > 0, f"--num-samples must be positive, got {self.num_samples}")
        if self.num_beams:
            _check(
                self.num_samples <= self.num_beams,
                f"--num-samples ({self.num_samples}) cannot exceed --num-beams ({self.num_beams})",
            )


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build a config dataclass from JSON, refusing unknown keys with a clear message."""
    if not isinstance(data, dict):
        raise GentextError(f"{what}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GentextError(f"{what}: unknown keys {unknown} (written by a newer gentext?)")
    try:
        return cls(**data)
    except TypeError as exc:
        raise GentextError(f"{what}: {exc}") from None
