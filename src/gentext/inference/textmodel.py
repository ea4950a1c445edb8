"""A trained model with its tokenizer: what `gentext.load` returns and the CLI and server use."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from gentext import checkpoint, keywords, native
from gentext.errors import GentextError
from gentext.fields import from_dict, to_dict
from gentext.inference import captioning, formats
from gentext.inference.conditioning import RunCondition
from gentext.inference.constraints import compile_for
from gentext.inference.engine import Engine
from gentext.inference.generation import unescape
from gentext.inference.jobs import Prompt
from gentext.inference.measures import Measures
from gentext.inference.prefixcache import PrefixCache
from gentext.inference.results import Collector, Completion
from gentext.models import model_device
from gentext.runconfig import RunConfig
from gentext.useconfig import LoadConfig, SampleConfig

logger = logging.getLogger(__name__)


class TextModel(Measures):
    """A trained model with its tokenizer: generate, stream, evaluate, describe."""

    def __init__(
        self, model: torch.nn.Module, tokenizer, config: RunConfig, run_dir: Path | None = None,
        prefix_cache_mb: int = LoadConfig.prefix_cache_mb, *, condition: RunCondition,
    ):  # fmt: skip
        self.model = model
        # states after shared prompt prefixes, for every engine of this model (inference/prefixcache.py)
        self.prefix_cache = PrefixCache(prefix_cache_mb << 20) if prefix_cache_mb else None
        self.tokenizer = tokenizer
        self.config = config
        self.run_dir = run_dir
        self.weights = "fp32"  # the generation step's weight format (set_weights)
        self.weight_costs: dict[str, float] = {}
        self.condition = condition  # what the run generates from: primes, never samples, evaluates (conditions/)
        self.decoder_start = condition.decoder_start(tokenizer)  # an attention decoder's first input
        self.condition_ids = condition.never_sampled(tokenizer)  # label marks, the end of a source

    @property
    def labels(self) -> list[str]:
        """The labels a labelled run generates from (`--condition label`), else []."""
        return self.condition.labels

    @property
    def pairs(self) -> bool:
        """Whether the run generates from a source (seq2seq)."""
        return self.condition.takes == "source"

    @property
    def captions(self) -> bool:
        """Whether the run generates from a picture (caption())."""
        return self.condition.takes == "image"

    def suppressed(self, config: SampleConfig) -> list[int]:
        """Ids never sampled: <unk> (unless allowed) and the condition marks."""
        return self.condition_ids if config.allow_unk else [*self.tokenizer.suppressed_ids, *self.condition_ids]

    def set_weights(self, name: str = "auto") -> str:
        """Store the generation step's matrices as fp32, bf16 or int8 (auto: the fastest format
        native here whose KL cost from fp32 is within 0.01 nats/token; inference/formats.py).
        A format named explicitly is also what evaluate() and score() measure; with auto they
        stay float32, so they reproduce the figures training reported. Returns the format taken."""
        native.prepare()  # the compiled step, where it is built (or being built: gentext/native)
        start = self._prompt("", self.default_label).ids if formats.supports_formats(self.model) else []
        self.weights, self.weight_costs = formats.choose(self.model, name, self.device, start)
        if formats.supports_formats(self.model):
            self.model.set_weight_format(self.weights, evaluate=name != "auto")
        return self.weights

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    @property
    def default_label(self) -> str | None:
        """A label to generate from where the caller names none but one is needed (speed checks)."""
        return self.labels[0] if self.labels else None

    def _sample_config(self, overrides: dict[str, Any]) -> SampleConfig:
        cfg = from_dict(SampleConfig, keywords.typed(SampleConfig, overrides, "generate()"), "generate()")
        cfg.validate()
        cfg.stop = [unescape(s) for s in cfg.stop]  # "\\n\\n" typed in a shell or a form means two newlines
        if cfg.length_penalty is None:  # a source or picture sets the output's length: by probability alone
            cfg.length_penalty = self.condition.length_penalty
        return cfg

    def _prompt(self, prompt: str, label: str | None = None, source: str | None = None, image=None) -> Prompt:
        """What to prime the network with, as the run's condition says (a labelled run: a newline
        and the label's mark first, how every training document began; a seq2seq run or a
        captioner: the decoder's start token, with the source or picture as the condition its
        `initial_state` takes)."""
        for name, value in (("prompt", prompt), ("label", label), ("source", source)):
            if value is not None and not isinstance(value, str):
                raise GentextError(f"the {name} must be a string, got {type(value).__name__}")
        return self.condition.prompt(self, prompt, label, source, image)

    def warn_unknown(self, words: list[str]) -> None:
        shown = ", ".join(repr(w) for w in words[:10])
        logger.warning("prompt words outside the vocabulary are read as <unk>: %s", shown)

    def check_prompt(self, prompt: str, label: str | None = None, source: str | None = None) -> None:
        """Raise GentextError if the prompt cannot be encoded (unknown characters at char level),
        the label is unknown (or missing, for a labelled run) or the source missing (seq2seq)."""
        self.condition.check_prompt(self, prompt, label, source)

    @property
    def end_id(self) -> int | None:
        """The end-of-text token (lines mode: the newline that ends every document), or None."""
        if self.config.corpus.mode != "lines":
            return None
        ids = self.tokenizer.encode("\n").tolist()
        return ids[0] if len(ids) == 1 else None

    @contextlib.contextmanager
    def eval_mode(self):
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def generate(
        self, prompt: str = "", label: str | None = None, source: str | None = None, image=None, **settings: Any
    ) -> list[str]:
        """`num_samples` texts (one batch), each starting with the prompt; from `label` for a run
        trained with --condition label, from `source` for a seq2seq run, from `image` (a path, a
        PIL image or a (3, S, S) tensor) for a captioner. Settings are SampleConfig fields."""
        return [c.text for c in self.complete(prompt, label, source, image, **settings)]

    def complete(
        self, prompt: str = "", label: str | None = None, source: str | None = None, image=None, **settings: Any
    ) -> list[Completion]:
        """`generate` with each sample's details: its text, why it ended, how many tokens it took
        and (with `logprobs=N`) each token's log-probability and N alternatives."""
        start, cfg = self.request(prompt, label, source, image, **settings)  # bad input fails before any work
        collector = self._run([(prompt, start)], cfg, rows=cfg.num_samples)[0]
        return collector.completions(prompt)

    def request(
        self, prompt: str = "", label: str | None = None, source: str | None = None, image=None, **settings: Any
    ) -> tuple[Prompt, SampleConfig]:
        """A generation's Prompt and checked settings (what the engine is given)."""
        cfg = self._sample_config(settings)
        start = self._prompt(prompt, label, source, image)
        compile_for(self.tokenizer, self.suppressed(cfg), cfg.regex, cfg.json_schema)  # a bad pattern: now
        return start, cfg

    def generate_many(self, prompts: list[str], **settings: Any) -> list[str]:
        """One sample per prompt, every prompt advancing in one batch (continuous batching): the
        texts `generate(prompt, **settings)` gives one by one, many times faster together."""
        cfg = self._sample_config(settings)
        if cfg.num_samples != 1:
            raise GentextError("generate_many takes one sample per prompt; use generate() for several samples")
        starts = [(prompt, self._prompt(prompt)) for prompt in prompts]  # unknown characters fail before any work
        done = self._run(starts, cfg, rows=len(prompts) * max(cfg.num_beams, 1))
        return [collector.texts(prompt)[0] for (prompt, _), collector in zip(starts, done, strict=True)]

    def _run(self, starts: list[tuple[str, Prompt]], cfg: SampleConfig, rows: int) -> list[Collector]:
        """Each prompt's request, every one on one engine run on this thread."""
        engine = Engine(self, max_rows=max(rows, 1))
        collectors = [Collector() for _ in starts]
        with self.eval_mode():
            for (_, start), collector in zip(starts, collectors, strict=True):
                engine.submit(start, cfg, collector)
            engine.run_until_idle()
        for collector in collectors:
            collector.raise_failure()
        return collectors

    def stream(
        self, prompt: str = "", label: str | None = None, source: str | None = None, image=None, **settings: Any
    ) -> Iterator[str]:
        """One sample as it is produced: the prompt, then each new piece of text."""
        start, cfg = self.request(prompt, label, source, image, **{**settings, "num_samples": 1})
        engine, collector = Engine(self, max_rows=max(cfg.num_beams, 1)), Collector()
        job = engine.submit(start, cfg, collector)
        yield prompt
        with self.eval_mode():
            while not job.ended:
                engine.step()  # inference mode per step, never held across the yield
                collector.raise_failure()
                piece = collector.take()
                if piece:
                    yield piece

    def caption(self, image, **settings: Any) -> list[str]:
        """Captions of a picture (a path or a PIL image) from a run trained with --condition image;
        settings as for generate()."""
        if not self.captions:
            raise GentextError("this run does not caption pictures (train one with --condition image)")
        return captioning.caption(self, image, **settings)

    def info(self) -> dict[str, Any]:
        metrics = checkpoint.read_metrics(self.run_dir) if self.run_dir else []
        evals = [m["val_loss"] for m in metrics if "val_loss" in m]
        return {
            "run": str(self.run_dir) if self.run_dir else None,
            "model": to_dict(self.config.model),
            "tokenizer": {"level": self.tokenizer.level, "vocab_size": self.tokenizer.vocab_size},
            "parameters": self.model.num_parameters(),
            "corpus": list(self.config.sources),
            "result": None if self.config.result is None else self.config.result.record(),
            "best_val_loss": min(evals) if evals else None,
            "evaluations": len(evals),
            "cache": None if self.config.cache is None else dataclasses.asdict(self.config.cache),
            "mixture": None if self.config.mixture is None else dataclasses.asdict(self.config.mixture),
        }
