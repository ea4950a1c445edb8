"""Configs for using a run and the process: generation settings (SampleConfig), how a saved run is
loaded (LoadConfig), the CPU threads (RuntimeConfig), what a server takes on (ServerLimits) and where
it listens (Listening). Fields are options as in config.py: the CLI, chat's /settings and the
server's request schema derive from them, and `validate()` bounds every one, so each surface refuses
a bad value with the same words. Nothing here imports torch: the command line is built from these.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from gentext.config import DEVICES
from gentext.errors import GentextError
from gentext.fields import check, flag_of, one_of, opt

WEIGHT_FORMATS = ("auto", "fp32", "bf16", "fp16", "int8")
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
MAX_LOGPROBS = 20  # alternatives reported per token (OpenAI's completions allow 5)
MAX_PATTERN_CHARS = 65_536  # a regular expression or a JSON schema


def _schema_text(value: str) -> str:
    """--json-schema takes the schema itself or @FILE."""
    if value.startswith("@"):
        from pathlib import Path

        try:
            return Path(value[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value


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
        "generation step's weights: fp32, bf16 (native on AVX-512 BF16/AMX CPUs and GPUs), fp16 (16-bit weights "
        "multiplied in fp32: x86 CPUs with AVX2, GPUs), int8 (any x86 CPU), "
        "or auto (the fastest native one within 0.01 nats/token of fp32, measured at load); eval, score and "
        "compare measure fp32 unless a format is given, and then measure that format",
    )
    network_only: bool = opt(
        False,
        "a run mixed with a neural cache or a Kneser-Ney chain loads as its network alone: faster generation, "
        "the network's own loss",
        flag="--no-mix",
    )
    prefix_cache_mb: int = opt(
        64, "memory for the states after prompt prefixes that later prompts share (recurrent and Markov runs; 0: off)"
    )

    def validate(self) -> LoadConfig:
        one_of(self.device, DEVICES, "--device")
        one_of(self.weights, WEIGHT_FORMATS, "--weights")
        most = 1 << 20
        check(0 <= self.prefix_cache_mb <= most, f"--prefix-cache-mb must be in 0..{most}, got {self.prefix_cache_mb}")
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
    presence_penalty: float = opt(0.0, "subtract this from the logit of each token already generated (OpenAI's; -2..2)")
    frequency_penalty: float = opt(0.0, "subtract this times how often each token was generated so far (-2..2)")
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
    regex: str | None = opt(None, "generate only text matching this regular expression (character and BPE runs)")
    json_schema: str | None = opt(
        None, "generate only JSON matching this schema (the schema or @FILE; char and BPE runs)", parse=_schema_text
    )
    logprobs: int | None = opt(
        None, f"report each generated token's log-probability and its N most likely alternatives (0..{MAX_LOGPROBS})"
    )
    num_samples: int = opt(1, "samples generated together as one batch")
    seed: int | None = opt(None, "same seed, same text")

    def validate(self) -> None:
        """Every field bounded: the CLI, the API and the server (a 422 quoting this) refuse alike.
        The upper bounds are far past any use; they keep a request from asking for the impossible."""
        check(self.seed is None or 0 <= self.seed < 2**63, f"--seed must be in 0..2**63-1, got {self.seed}")
        for name, most in SAMPLE_CAPS.items():
            value = getattr(self, name)
            check(value <= most, f"{flag_of(SampleConfig, name)} must be <= {most:,}, got {value}")
        check(self.max_new_tokens >= 0, f"--max-new-tokens must be >= 0, got {self.max_new_tokens}")
        check(
            self.temperature >= 0 and math.isfinite(self.temperature),
            f"--temperature must be >= 0 (0 is greedy), got {self.temperature}",
        )
        check(self.top_k >= 0, f"--top-k must be >= 0 (0 disables it), got {self.top_k}")
        check(0.0 < self.top_p <= 1.0, f"--top-p must be in (0, 1], got {self.top_p}")
        check(0.0 <= self.min_p < 1.0, f"--min-p must be in [0, 1), got {self.min_p}")
        check(
            self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty),
            f"--repetition-penalty must be positive (1 disables it), got {self.repetition_penalty}",
        )
        check(self.no_repeat_ngram_size >= 0, f"--no-repeat-ngram-size must be >= 0, got {self.no_repeat_ngram_size}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            flag = flag_of(SampleConfig, name)
            check(math.isfinite(value) and -2 <= value <= 2, f"{flag} must be in [-2, 2], got {value}")
        check(
            self.logprobs is None or 0 <= self.logprobs <= MAX_LOGPROBS,
            f"--logprobs must be in 0..{MAX_LOGPROBS}, got {self.logprobs}",
        )
        for name in ("regex", "json_schema"):
            value = getattr(self, name)
            check(
                value is None or (isinstance(value, str) and 0 < len(value) <= MAX_PATTERN_CHARS),
                f"{flag_of(SampleConfig, name)} must be 1 to {MAX_PATTERN_CHARS:,} characters",
            )
        check(self.regex is None or self.json_schema is None, "give --regex or --json-schema, not both")
        check(all(isinstance(s, str) and s for s in self.stop), "--stop strings must be non-empty")
        check(
            len(self.stop) <= MAX_STOPS and all(len(s) <= MAX_STOP_CHARS for s in self.stop),
            f"--stop: at most {MAX_STOPS} strings of at most {MAX_STOP_CHARS} characters",
        )
        check(
            self.max_time is None or 0 < self.max_time < math.inf,
            f"--max-time must be a positive number, got {self.max_time}",
        )
        check(
            self.length_penalty is None or (math.isfinite(self.length_penalty) and abs(self.length_penalty) <= 10),
            f"--length-penalty must be in [-10, 10], got {self.length_penalty}",
        )
        check(self.num_beams >= 0, f"--num-beams must be >= 0, got {self.num_beams}")
        check(self.num_samples > 0, f"--num-samples must be positive, got {self.num_samples}")
        if self.num_beams:
            check(
                self.num_samples <= self.num_beams,
                f"--num-samples ({self.num_samples}) cannot exceed --num-beams ({self.num_beams})",
            )


@dataclass
class ServerLimits:
    """What one server takes on (gentext serve's flags)."""

    max_prompt_chars: int = opt(4000, "longest prompt or source, in characters")
    max_new_tokens: int = opt(1000, "most tokens one sample may ask for", flag="--max-new-tokens-limit")
    max_num_samples: int = opt(16, "most samples one request may ask for")
    max_num_beams: int = opt(8, "most beams one request may ask for")
    max_concurrency: int = opt(32, "requests in progress at once; more wait (--max-queue), beyond that 503")
    max_queue: int = opt(8, "requests waiting for a place; more get 503 at once")
    max_batch_rows: int = opt(32, "rows of one batched step (continuous batching): samples advancing together")
    worker_threads: int = opt(2, "requests computed on a thread of their own at once: scoring and attention")
    request_timeout: float = opt(60.0, "seconds of generation per request (and the grace period on SIGTERM)")
    stream_interval: float = opt(
        0.02, "seconds a streamed token may wait to go out with the ones after it: fewer events (0: one per token)"
    )
    workers: int = opt(
        1,
        "server processes sharing the port, each with its own copy of the models, batch, limits and /metrics: more "
        "use more cores (one process is held to about one by Python's interpreter lock)",
    )

    def validate(self) -> ServerLimits:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (value >= 0 if f.name in ("max_queue", "stream_interval") else value > 0):
                raise GentextError(f"{flag_of(ServerLimits, f.name)} must be positive, got {value}")
        return self


@dataclass
class Listening:
    """Where one server listens and whom it answers (gentext serve's flags)."""

    host: str = opt("127.0.0.1", "address to listen on (0.0.0.0: every interface; give --api-key there)")
    port: int = opt(8000, "TCP port to listen on, 1-65535")
    api_key: str | None = opt(
        None, "require 'Authorization: Bearer KEY' on every endpoint but /healthz (or GENTEXT_API_KEY)"
    )
    cors_origins: list[str] = opt(
        help="allow browser requests from this origin (repeat for more)", flag="--cors-origin", factory=list
    )

    def validate(self) -> Listening:
        if not 1 <= self.port <= 65535:  # uvicorn would bind the port modulo 65536 and say it took this one
            raise GentextError(f"--port must be between 1 and 65535, got {self.port}")
        if not self.host.strip():
            raise GentextError("--host must name an address, got an empty one")
        return self
