"""Typed configs for every pipeline stage: the one place where an option is defined.

Each field is an option: its name (the API keyword, the JSON key, the server's request field), its
default, and in `opt(...)` its help text, flag name and parser. The CLI's flags (`cli/options.py`),
the presets, chat's /settings and the server's request schema are all derived from these fields;
`validate()` holds each option's range, with messages that name the flag, so every surface refuses
a bad value with the same words. `config.json` in a run directory stores the dataclasses as JSON.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import ClassVar

from gentext.fields import check, one_of, opt
from gentext.flagtext import parse_cutoffs, parse_duration

FORMAT_VERSION = 1
MAX_ORDER = 20
LEVELS = ("char", "word", "bpe")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
OPTIMIZERS = ("adamw", "sgd")

# Loading a config from someone else's run must not allocate terabytes: sizes past these are refused.
MAX_VOCAB = 5_000_000
MAX_HIDDEN = 16_384
DEFAULT_WIDTH = 256  # --hidden-size where it is not chosen from the text (training/defaults.auto_width)
BYTES = 256  # byte-level BPE's first tokens: one per byte value
MAX_LAYERS = 64


@dataclass
class CorpusConfig:
    """Where the text comes from and how it is split."""

    paths: list[str] = field(default_factory=list)  # files, directories or "-"; empty: the built-in corpus
    builtin: str = opt(
        "python-docs", "built-in or named corpus used when no PATH is given (see `gentext corpora`)", flag="--corpus"
    )
    offline: bool = opt(False, "never download a named corpus (use the cache only)")
    glob: str = opt("*.txt", "files to take from directories")
    val_fraction: float = opt(0.1, "the last fraction of the text is held out for validation (0.1: the last 10%)")
    val_path: str | None = opt(None, "a separate validation file instead of the split", flag="--val")
    encoding_errors: str = opt("strict", "invalid UTF-8: strict (an error naming the byte) or replace")
    mode: str = opt("stream", "stream: one long text; lines: each non-empty line is a document that ends")
    condition: str = opt(
        "none",
        "none; label: lines are label<TAB>text, each text generated from its label; source: lines are "
        "source<TAB>target pairs for --model seq2seq (every k-th line is held out, after a seeded shuffle); "
        "image: PATH is a captions file (picture<TAB>caption) or a folder with captions.tsv",
    )
    label_column: str | None = opt(None, "--condition label from CSV: the column (name in the header) holding labels")
    text_column: str | None = opt(None, "--condition label from CSV: the column holding the texts")

    def validate(self) -> None:
        # the condition is checked, and sets what it needs here, where it is looked up
        # (gentext/conditions: condition_for), so a new condition touches no list in this file
        check(
            (self.label_column is None) == (self.text_column is None),
            "--label-column and --text-column go together (a CSV with a header row)",
        )
        check(self.mode in ("stream", "lines"), f"--mode must be stream or lines, got {self.mode!r}")
        check(0.0 <= self.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        one_of(self.encoding_errors, ("strict", "replace"), "--encoding-errors")


@dataclass
class TokenizerConfig:
    """How text becomes token ids."""

    level: str = opt("char", "tokens: char (Unicode code points), word, or bpe (byte-level)")
    tokenize: str = opt("regex", "word level: regex (words + punctuation) or whitespace (pre-tokenized text)")
    vocab_size: int | None = opt(None, "word: keep this many most frequent words (the rest are <unk>); bpe: size")
    min_count: int = opt(1, "word level: rarer words become <unk>")

    def validate(self) -> None:
        check(self.level in LEVELS, f"--level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        check(
            self.tokenize in ("regex", "whitespace"), f"--tokenize must be regex or whitespace, got {self.tokenize!r}"
        )
        check(self.vocab_size is None or self.vocab_size >= 2, f"--vocab-size must be >= 2, got {self.vocab_size}")
        check(  # byte-level BPE starts from its 256 bytes; fewer would be silently 256
            self.level != "bpe" or self.vocab_size is None or self.vocab_size > BYTES,
            f"--vocab-size for bpe must be more than its {BYTES} byte tokens, got {self.vocab_size}",
        )
        check(self.min_count >= 1, f"--min-count must be >= 1, got {self.min_count}")


@dataclass
class ModelConfig:
    """The network. `vocab_size` is filled in from the tokenizer."""

    kind: str = opt(
        "auto",
        "auto (mingru or lstm, chosen from the text's size and the time limit) | lstm | gru | rnn | mingru | "
        "transformer | markov (Kneser-Ney n-gram) | seq2seq | captioner; pretrained: --init-from its folder",
        flag="--model",
    )
    vocab_size: int = 0  # from the tokenizer, not an option
    feature_size: int = 0  # captioner on precomputed .npy features: their width (from the data, not an option)
    scaled_attention: bool = True  # seq2seq/captioner: scores / sqrt(hidden), not an option (DESIGN.md)
    SAVED_BEFORE: ClassVar[dict] = {"scaled_attention": False}  # what a saved config without the key meant
    image_norm: str = opt(
        "none", "captioner: normalise each CNN convolution per picture: none, or group (group norm; RESULTS.md)"
    )
    embed_size: int = opt(64, "embedding width")
    hidden_size: int | None = opt(None, "recurrent state width (not given: chosen, 256 or 512; docs/training.md)")
    num_layers: int = opt(2, "recurrent layers")
    dropout: float | None = opt(
        None,
        "dropout on embeddings, between layers and before the output (not given: chosen from how many times "
        "the run will read the corpus, 0 to 0.4; training/defaults.py)",
    )
    tie_weights: bool = opt(False, "share embedding and output weights (needs --embed-size = --hidden-size)")
    order: int = opt(6, "markov: n-gram order (context + 1)")
    num_heads: int = opt(4, "transformer: attention heads (--hidden-size must be a multiple)")
    context: int = opt(256, "transformer: tokens a position attends to (itself included); generation slides past it")
    hf_config: dict | None = None  # a pretrained model's Hugging Face config (models/pretrained.py), not an option
    adaptive_cutoffs: list[int] = opt(
        help="word ids where softmax clusters start, e.g. 2000,6000: a fast output layer for big vocabularies",
        flag="--adaptive-softmax",
        parse=parse_cutoffs,
        factory=list,
    )

    def validate(self) -> None:
        # the kind itself is checked against the registry by models.build_model / models.check_kind
        check(0 < self.vocab_size <= MAX_VOCAB, f"vocab_size must be in 1..{MAX_VOCAB}, got {self.vocab_size}")
        check(0 < self.embed_size <= MAX_HIDDEN, f"--embed-size must be in 1..{MAX_HIDDEN}, got {self.embed_size}")
        width = 1 if self.hidden_size is None else self.hidden_size  # None: chosen when the text is read
        check(0 < width <= MAX_HIDDEN, f"--hidden-size must be in 1..{MAX_HIDDEN}, got {self.hidden_size}")
        check(0 < self.num_layers <= MAX_LAYERS, f"--num-layers must be in 1..{MAX_LAYERS}, got {self.num_layers}")
        check(self.dropout is None or 0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        check(0 < self.order <= MAX_ORDER, f"--order must be in 1..{MAX_ORDER}, got {self.order}")
        one_of(self.image_norm, ("none", "group"), "--image-norm")
        check(0 < self.num_heads <= MAX_LAYERS, f"--num-heads must be in 1..{MAX_LAYERS}, got {self.num_heads}")
        check(1 < self.context <= MAX_VOCAB, f"--context must be in 2..{MAX_VOCAB}, got {self.context}")
        if self.adaptive_cutoffs:
            c = self.adaptive_cutoffs
            check(self.kind != "markov", "--adaptive-softmax is for networks, not --model markov")
            check(
                all(a < b for a, b in zip([0, *c], [*c, self.vocab_size], strict=True)),
                "--adaptive-softmax cutoffs must increase and lie between 0 and the vocabulary size "
                f"({self.vocab_size}), got {','.join(map(str, c))}",
            )
        if self.tie_weights:
            check(
                self.embed_size == self.hidden_size,
                "--tie-weights needs --embed-size equal to --hidden-size "
                f"(got {self.embed_size} and {self.hidden_size})",
            )


@dataclass
class TrainConfig:
    """The optimisation. Training stops at the first of steps, epochs and time_limit that is set."""

    SAVED_BEFORE: ClassVar[dict] = {"weight_average": 0.0, "distill": 0.0}  # what a saved config without the key meant

    batch_size: int = opt(16, "parallel streams (the global batch under torchrun)")
    seq_len: int = opt(64, "BPTT window, in tokens")
    learning_rate: float | None = opt(
        None,
        "peak learning rate (not given: 3e-3; 7e-3 for a 256/512-wide char LSTM on a time limit, 3e-2 for a 256-wide "
        "one taught by a chain)",
        flag="--lr",
    )
    min_lr_ratio: float = opt(0.1, "the cosine schedule ends at --lr times this")
    warmup_steps: int = opt(50, "linear warmup steps")
    weight_decay: float | None = opt(
        None, "adamw: decoupled decay (not given: 0.1 for plain character text, else 0.01); sgd: L2, default 0"
    )
    weight_average: float | None = opt(
        None,
        "validate and keep a moving average of the weights with this decay per step (0: off; not given: 0.999 "
        "for a character LSTM on a time limit, else 0)",
        flag="--ema",
    )
    distill: float | None = opt(
        None,
        "weight of a Kneser-Ney chain's predictions in each training target, each part of the text taught by a "
        "chain fitted on the others (0: off; not given: for a char LSTM on a time limit, 0.5 where it reads its "
        "text at least 20 times, 0.1 where more than 3 times, else 0; training/distill.py)",
    )
    optimizer: str = opt("adamw", "adamw, or sgd (plain SGD: use a high --lr such as 20 and --grad-clip 0.25)")
    grad_clip: float = opt(1.0, "max global gradient norm; 0 disables")
    steps: int | None = opt(None, "stop after this many steps (2000 if no limit is given)")
    epochs: float | None = opt(None, "stop after this many passes over the data")
    time_limit: float | None = opt(
        None,
        "stop training after this long, e.g. 10m (the LR schedule fits it); reading the corpus before "
        "and the final validation after come on top, and the summary says how long they took",
        parse=parse_duration,
    )
    eval_every: int | None = opt(None, "steps between validations (not given: 200, rarer on a --time-limit)")
    eval_tokens: int = opt(
        50_000, "periodic validations read a fixed sample of this many held-out tokens, spread over the split"
    )
    save_every: int = opt(200, "steps between resumable checkpoints (train_state.safetensors)")
    state_reset: float = opt(
        0.05, "chance a stream starts a window from a cold state, so the model learns to start as generation does"
    )
    patience: int | None = opt(None, "stop after this many validations without improvement")
    tensorboard: bool = opt(False, "also log to RUN/tensorboard (needs tensorboard)")
    init_from: str | None = opt(
        None, "start from this run's weights (fine-tuning): its architecture, its vocabulary grown by the new text's"
    )
    mix_order: int | None = opt(
        None,
        "mix the trained network with a Kneser-Ney chain of this order fitted on the same text, weighted on the "
        "validation text (0: off; default: on for texts under 20M tokens)",
        flag="--mix-markov",
    )
    cache_window: int | None = opt(
        None,
        "give a recurrent network (lstm/gru/rnn/mingru) a neural cache of up to its last N outputs "
        "(Grave et al. 2017; window N/4, N/2 or N), fitted on the validation text and kept where it "
        "helps: lower loss, slower generation (default 2000 for a character LSTM on a time limit, "
        "else 0: off)",
        flag="--neural-cache",
    )
    seed: int = opt(1337, "random seed (same seed, same run)")
    device: str = opt("auto", "auto | cpu | cuda")
    precision: str = opt("auto", "auto | fp32 | bf16 | fp16 (training steps; evaluation is always float32)")

    def validate(self) -> None:
        check(self.batch_size > 0, f"--batch-size must be positive, got {self.batch_size}")
        check(self.seq_len > 0, f"--seq-len must be positive, got {self.seq_len}")
        check(
            self.learning_rate is None or (self.learning_rate > 0 and math.isfinite(self.learning_rate)),
            f"--lr must be a positive number, got {self.learning_rate}",
        )
        check(0.0 <= self.min_lr_ratio <= 1.0, f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        check(self.warmup_steps >= 0, f"--warmup-steps must be >= 0, got {self.warmup_steps}")
        check(
            self.weight_decay is None or self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"
        )
        average = self.weight_average
        check(average is None or 0.0 <= average < 1.0, f"--ema must be in [0, 1), got {average}")
        check(self.distill is None or 0.0 <= self.distill < 1.0, f"--distill must be in [0, 1), got {self.distill}")
        check(self.optimizer in OPTIMIZERS, f"--optimizer must be adamw or sgd, got {self.optimizer!r}")
        check(self.grad_clip >= 0, f"--grad-clip must be >= 0, got {self.grad_clip}")
        check(self.steps is None or self.steps > 0, f"--steps must be positive, got {self.steps}")
        check(self.epochs is None or self.epochs > 0, f"--epochs must be positive, got {self.epochs}")
        check(self.time_limit is None or self.time_limit > 0, f"--time-limit must be positive, got {self.time_limit}")
        for flag, every in (("--eval-every", self.eval_every), ("--save-every", self.save_every)):
            check(every is None or every > 0, f"{flag} must be positive, got {every}")
        check(0.0 <= self.state_reset <= 1.0, f"--state-reset must be in [0, 1], got {self.state_reset}")
        check(self.patience is None or self.patience > 0, f"--patience must be positive, got {self.patience}")
        check(
            self.cache_window is None or self.cache_window >= 0, f"--neural-cache must be >= 0, got {self.cache_window}"
        )
        mix = self.mix_order
        check(mix is None or 0 <= mix <= MAX_ORDER, f"--mix-markov must be in 0..{MAX_ORDER}, got {mix}")
        check(self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        check(
            self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
        )

    def with_default_stop(self) -> TrainConfig:
        """A copy that stops somewhere: 2000 steps when no limit was given."""
        if self.steps is None and self.epochs is None and self.time_limit is None:
            return dataclasses.replace(self, steps=2000)
        return self
