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
import re
from dataclasses import dataclass, field
from typing import Any

from gentext.errors import GentextError

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


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, parse=None, factory=None):
    """A config field that is also an option: `help` becomes the flag's help, `flag` its name
    (default --field-name), `parse` turns the flag's text into the value (default: the field's type)."""
    metadata = {"help": help, "flag": flag, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of an option field."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (use e.g. 300, 90s, 10m, 1h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_cutoffs(text: str) -> list[int]:
    """'2000,6000' -> [2000, 6000]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"invalid cutoffs {text!r} (use e.g. 2000,6000)") from None


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise GentextError(message)


def _one_of(value: Any, choices: tuple, flag: str) -> None:
    _check(value in choices, f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


@dataclass
class CorpusConfig:
    """Where the text comes from and how it is split."""

    paths: list[str] = field(default_factory=list)  # files, directories or "-"; empty: the built-in corpus
    builtin: str = opt(
        "python-docs", "built-in or named corpus used when no PATH is given (see `gentext corpora`)", flag="--corpus"
    )
    offline: bool = opt(False, "never download a named corpus (use the cache only)")
    glob: str = opt("*.txt", "files to take from directories")
    val_fraction: float = opt(0.1, "the last fraction of the text is held out for validation")
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
        _one_of(self.condition, ("none", "label", "source", "image"), "--condition")
        _check(
            (self.label_column is None) == (self.text_column is None),
            "--label-column and --text-column go together (a CSV with a header row)",
        )
        _check(self.label_column is None or self.condition == "label", "--label-column needs --condition label")
        if self.condition != "none":
            self.mode = "lines"  # a labelled line is a document: it ends, and the next one starts from its label
        _check(self.mode in ("stream", "lines"), f"--mode must be stream or lines, got {self.mode!r}")
        _check(0.0 <= self.val_fraction < 1.0, f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        _check(
            self.encoding_errors in ("strict", "replace"),
            f"--encoding-errors must be 'strict' or 'replace', got {self.encoding_errors!r}",
        )


@dataclass
class TokenizerConfig:
    """How text becomes token ids."""

    level: str = opt("char", "tokens: char (Unicode code points), word, or bpe (byte-level)")
    tokenize: str = opt("regex", "word level: regex (words + punctuation) or whitespace (pre-tokenized text)")
    vocab_size: int | None = opt(None, "word: keep this many most frequent words (the rest are <unk>); bpe: size")
    min_count: int = opt(1, "word level: rarer words become <unk>")

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

    kind: str = opt(
        "lstm",
        "lstm | gru | rnn | transformer | markov (Kneser-Ney n-gram) | seq2seq | captioner; a pretrained model: "
        "--init-from its folder",
        flag="--model",
    )
    vocab_size: int = 0  # from the tokenizer, not an option
    feature_size: int = 0  # captioner on precomputed .npy features: their width (from the data, not an option)
    embed_size: int = opt(64, "embedding width")
    hidden_size: int = opt(256, "recurrent state width")
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
        _check(0 < self.vocab_size <= MAX_VOCAB, f"vocab_size must be in 1..{MAX_VOCAB}, got {self.vocab_size}")
        _check(0 < self.embed_size <= MAX_HIDDEN, f"--embed-size must be in 1..{MAX_HIDDEN}, got {self.embed_size}")
        _check(0 < self.hidden_size <= MAX_HIDDEN, f"--hidden-size must be in 1..{MAX_HIDDEN}, got {self.hidden_size}")
        _check(0 < self.num_layers <= MAX_LAYERS, f"--num-layers must be in 1..{MAX_LAYERS}, got {self.num_layers}")
        _check(self.dropout is None or 0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1), got {self.dropout}")
        _check(0 < self.order <= MAX_ORDER, f"--order must be in 1..{MAX_ORDER}, got {self.order}")
        _check(0 < self.num_heads <= MAX_LAYERS, f"--num-heads must be in 1..{MAX_LAYERS}, got {self.num_heads}")
        _check(1 < self.context <= MAX_VOCAB, f"--context must be in 2..{MAX_VOCAB}, got {self.context}")
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

    batch_size: int = opt(16, "parallel streams (the global batch under torchrun)")
    seq_len: int = opt(64, "BPTT window, in tokens")
    learning_rate: float = opt(3e-3, "peak learning rate", flag="--lr")
    min_lr_ratio: float = opt(0.1, "the cosine schedule ends at --lr times this")
    warmup_steps: int = opt(50, "linear warmup steps")
    weight_decay: float | None = opt(None, "default 0.01 with adamw (decoupled), 0 with sgd (where it is L2)")
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
    eval_every: int = opt(200, "steps between validations (the best weights are kept)")
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
    seed: int = opt(1337, "random seed (same seed, same run)")
    device: str = opt("auto", "auto | cpu | cuda")
    precision: str = opt("auto", "auto | fp32 | bf16 | fp16 (training steps; evaluation is always float32)")

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


WEIGHT_FORMATS = ("auto", "fp32", "bf16", "int8")
SAMPLE_CAPS = {  # upper bounds of SampleConfig's integer and scale fields
    "max_new_tokens": 1_000_000,
    "temperature": 1e4,
    "top_k": 2**31 - 1,
    "repetition_penalty": 1e4,
    "no_repeat_ngram_size": 1024,
    "num_beams": 64,
    "num_samples": 4096,
}
MAX_STOPS, MAX_STOP_CHARS = 16, 256


@dataclass
class RuntimeConfig:
    """How this process uses the machine (every command; not saved in a run)."""

    threads: int | None = opt(
        None,
        "CPU threads (not given: the cores this process may use, fewer while other processes keep some busy, "
        "re-checked every few seconds; OMP_NUM_THREADS also fixes it; gentext/threads.py)",
    )


@dataclass
class LoadConfig:
    """How a saved run is loaded to generate, evaluate and serve."""

    device: str = opt("cpu", "cpu | cuda | auto")
    weights: str = opt(
        "auto",
        "generation step's weights: fp32, bf16 (native on AVX-512 BF16/AMX CPUs and GPUs), int8 (any x86 CPU), "
        "or auto (the fastest native one within 0.01 nats/token of fp32, measured at load); eval, score and "
        "compare measure fp32 unless a format is given, and then measure that format",
    )

    def validate(self) -> LoadConfig:
        _one_of(self.device, DEVICES, "--device")
        _one_of(self.weights, WEIGHT_FORMATS, "--weights")
        return self


@dataclass
class SampleConfig:
    """Generation settings; names follow Hugging Face `generate`. Each is a no-op at its default."""

    max_new_tokens: int = opt(200, "tokens to generate per sample")
    temperature: float = opt(0.8, "0 is greedy; below 1 sharper, above 1 flatter")
    top_k: int = opt(0, "keep the k most likely tokens (0: all)")
    top_p: float = opt(1.0, "nucleus: the smallest set of tokens reaching probability p (1: off)")
    min_p: float = opt(0.0, "drop tokens below min-p times the top probability (0: off)")
    repetition_penalty: float = opt(1.0, "above 1 discourages tokens already in the text (1: off)")
    no_repeat_ngram_size: int = opt(0, "forbid repeating any n-gram of this many tokens (0: off)")
    stop: list[str] = opt(help="end a sample before this string; \\n, \\t escapes (repeatable)", factory=list)
    max_time: float | None = opt(None, "stop generating after this many seconds")
    num_beams: int = opt(0, "beam search with this many beams (deterministic; 1 is greedy, 0 samples)")
    length_penalty: float | None = opt(
        None,
        "beam scores are log-probability / length ** this (not given: 0 for translations and captions, whose "
        "length the source sets, so beams find the most likely output; 1 for text)",
    )
    allow_unk: bool = opt(False, "word level: let <unk> be generated")
    num_samples: int = opt(1, "samples generated together as one batch")
    seed: int | None = opt(None, "same seed, same text")

    def validate(self) -> None:
        """Every field bounded: the CLI, the API and the server (a 422 quoting this) refuse alike.
        The upper bounds are far past any use; they keep a request from asking for the impossible."""
        _check(self.seed is None or 0 <= self.seed < 2**63, f"--seed must be in 0..2**63-1, got {self.seed}")
        for name, most in SAMPLE_CAPS.items():
            value = getattr(self, name)
            _check(value <= most, f"{flag_of(SampleConfig, name)} must be <= {most:,}, got {value}")
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
        _check(
            len(self.stop) <= MAX_STOPS and all(len(s) <= MAX_STOP_CHARS for s in self.stop),
            f"--stop: at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters",
        )
        _check(
            self.max_time is None or 0 < self.max_time < math.inf,
            f"--max-time must be a positive number, got {self.max_time}",
        )
        _check(
            self.length_penalty is None or (math.isfinite(self.length_penalty) and abs(self.length_penalty) <= 10),
            f"--length-penalty must be in [-10, 10], got {self.length_penalty}",
        )
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
