"""A trained model with its tokenizer: what `gentext.load` returns and the CLI and server use."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gentext import checkpoint
from gentext.config import CorpusConfig, from_dict
from gentext.data.conditions import SOURCE_END, check_label, mark, pair_ids
from gentext.data.corpus import load_corpus, read_text
from gentext.data.tokencache import held_out
from gentext.errors import GentextError
from gentext.inference import captioning, conditioning, formats, generation, translation
from gentext.inference.generation import unescape
from gentext.inference.novelty import novelty
from gentext.models import model_device
from gentext.models.scoring import evaluate
from gentext.models.spelling import SpellingModel
from gentext.useconfig import SampleConfig

logger = logging.getLogger(__name__)


def characters(tok, text: str, ids: np.ndarray) -> int:
    """Characters of `text` that evaluation predicts: all but those of the first token."""
    return max(len(text) - len(tok.decode(ids[:1])), 1)


class TextModel:
    """A trained model with its tokenizer: generate, stream, evaluate, describe."""

    def __init__(self, model: torch.nn.Module, tokenizer, config: dict[str, Any], run_dir: Path | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.run_dir = run_dir
        self.weights = "fp32"  # the generation step's weight format (set_weights)
        self.weight_costs: dict[str, float] = {}
        self.labels: list[str] = list(config.get("labels") or [])  # --condition label (data/conditions.py)
        # label marks and the end of a source are never sampled (inference/generation.suppressed)
        tokenizer.condition_ids = conditioning.mark_ids(tokenizer, len(self.labels))
        kind = getattr(getattr(model, "config", None), "kind", None)
        self.pairs = kind == "seq2seq"  # generates from a source
        self.captions = kind == "captioner"  # generates from a picture (caption())
        if self.pairs or self.captions:  # the attention decoder starts from SOURCE_END
            model.source_end_id = pair_ids(tokenizer)[0]
        if self.pairs:
            tokenizer.condition_ids = [*tokenizer.condition_ids, model.source_end_id]

    def set_weights(self, name: str = "auto") -> str:
        """Store the generation step's matrices as fp32, bf16 or int8 (auto: the fastest format
        native here whose KL cost from fp32 is within 0.01 nats/token; inference/formats.py).
        A format named explicitly is also what evaluate() and score() measure; with auto they
        stay float32, so they reproduce the figures training reported. Returns the format taken."""
        start = self._prompt_ids("", self.default_label) if formats.supports_formats(self.model) else []
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
        cfg = from_dict(SampleConfig, overrides, "generate()")
        cfg.validate()
        cfg.stop = [unescape(s) for s in cfg.stop]  # "\\n\\n" typed in a shell or a form means two newlines
        if cfg.length_penalty is None:  # the source sets a translation's length: rank beams by probability alone
            cfg.length_penalty = 0.0 if self.pairs or self.captions else 1.0
        return cfg

    def _prompt_ids(self, prompt: str, label: str | None = None, source: str | None = None) -> list[int]:
        """Ids to prime the network with: the prompt's, or a start token when it is empty; for a
        labelled run, a newline and the label's mark first (how every training document began); for
        a seq2seq run, the source and SOURCE_END first (the prompt then starts the target)."""
        if self.pairs or source is not None:
            if not self.pairs:
                raise GentextError("this run was not trained on pairs (train with --model seq2seq --condition source)")
            if not source or not source.strip():
                raise GentextError("a seq2seq run generates from a source: give --source")
            return self.tokenizer.encode(source.strip() + SOURCE_END + prompt).tolist()
        if self.labels or label is not None:
            if label is None:
                raise GentextError(f"this run generates from a label (--label): one of {', '.join(self.labels[:30])}")
            return self.tokenizer.encode("\n" + mark(check_label(label, self.labels)) + prompt).tolist()
        if prompt:
            unknown = getattr(self.tokenizer, "unknown_words", lambda _: [])(prompt)
            if unknown:
                shown = ", ".join(repr(w) for w in unknown[:10])
                logger.warning("prompt words outside the vocabulary are read as <unk>: %s", shown)
            return self.tokenizer.encode(prompt).tolist()
        # No prompt: prime with a newline (the start of a line), else with the first token.
        try:
            return self.tokenizer.encode("\n").tolist()
        except GentextError:
            return [0]

    def check_prompt(self, prompt: str, label: str | None = None, source: str | None = None) -> None:
        """Raise GentextError if the prompt cannot be encoded (unknown characters at char level),
        the label is unknown (or missing, for a labelled run) or the source missing (seq2seq)."""
        self._prompt_ids(prompt, label, source)

    @property
    def end_id(self) -> int | None:
        """The end-of-text token (lines mode: the newline that ends every document), or None."""
        if self.config.get("corpus", {}).get("mode") != "lines":
            return None
        ids = self.tokenizer.encode("\n").tolist()
        return ids[0] if len(ids) == 1 else None

    @contextlib.contextmanager
    def _eval_mode(self):
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def generate(
        self, prompt: str = "", label: str | None = None, source: str | None = None, **settings: Any
    ) -> list[str]:
        """`num_samples` texts (one batch), each starting with the prompt; from `label` for a run
        trained with --condition label, from `source` for a seq2seq run. Settings are SampleConfig fields."""
        cfg = self._sample_config(settings)
        ids = self._prompt_ids(prompt, label, source)  # unknown characters and labels fail before any work
        with self._eval_mode():
            return generation.generate_texts(self.model, self.tokenizer, prompt, ids, cfg, self.end_id)

    def request(
        self, prompt: str = "", label: str | None = None, source: str | None = None, **settings: Any
    ) -> tuple[list[int], SampleConfig]:
        """A generation's prompt ids and checked settings (what a batch engine is given)."""
        return self._prompt_ids(prompt, label, source), self._sample_config(settings)

    def generate_many(self, prompts: list[str], **settings: Any) -> list[str]:
        """One sample per prompt, every prompt advancing in one batch (continuous batching): the
        texts `generate(prompt, **settings)` gives one by one, many times faster together."""
        from gentext.inference.batching import BatchEngine, Collector, supports

        cfg = self._sample_config(settings)
        if cfg.num_samples != 1 or not supports(self, cfg):
            raise GentextError(
                "generate_many takes one sample per prompt, no beams, and a model with a fixed-size state "
                f"(lstm, gru, rnn, markov); use generate() for this {self.model.config.kind} model or setting"
            )
        ids = [self._prompt_ids(prompt) for prompt in prompts]  # unknown characters fail before any work
        engine = BatchEngine(self, max_rows=max(len(prompts), 1))
        collectors = [Collector(rows=1) for _ in prompts]
        with self._eval_mode():
            for prompt_ids, collector in zip(ids, collectors, strict=True):
                engine.submit(prompt_ids, cfg, collector, start=False)
            engine.run_until_idle()
        errors = [c.end[1] for c in collectors if c.end is not None and c.end[0] == "error"]
        if errors:
            raise GentextError(errors[0])
        return [c.texts(prompt)[0] for prompt, c in zip(prompts, collectors, strict=True)]

    def stream(
        self, prompt: str = "", label: str | None = None, source: str | None = None, **settings: Any
    ) -> Iterator[str]:
        """One sample as it is produced: the prompt, then each new piece of text."""
        cfg = self._sample_config({**settings, "num_samples": 1})
        ids = self._prompt_ids(prompt, label, source)
        with self._eval_mode():
            yield from generation.stream_text(self.model, self.tokenizer, prompt, ids, cfg, self.end_id)

    def evaluate(
        self,
        paths: list[str] | None = None,
        text: str | None = None,
        seq_len: int = 256,
        unknown: str = "error",
        leave_out: set[str] | frozenset[str] = frozenset(),
    ) -> dict[str, Any]:
        """Loss (nats/token), perplexity and bits per character on `text`, the files in `paths`,
        or (neither given) the run's held-out split, read from the token cache when it is there.
        `unknown="skip"` leaves characters the model cannot represent (and `leave_out`) out of the
        text, and says how many; the default refuses them."""
        if self.captions:  # picture<TAB>caption lines (default: the held-out pictures): BLEU, chrF, attributes
            return captioning.evaluate_captions(self, captioning.picture_pairs(self, paths))
        if text is None and not paths:
            held_out = None if self.labels or self.pairs else self._held_out_ids()  # conditions need the texts
            if held_out is not None:
                return self._honest(self._scores(*held_out, seq_len), self._unknown_word_text(held_out[0]))
            text = self._held_out_text()
        if text is None:
            text = read_text(paths)
        if self.pairs:  # source<TAB>target pairs: loss, exact match, chrF, BLEU (greedy and beams)
            return translation.evaluate_pairs(self, translation.held_out_pairs(text))
        if self.labels:  # label<TAB>text lines: scored after their label's mark, as trained
            corpus = self.config.get("corpus", {})
            columns = (corpus["label_column"], corpus["text_column"]) if corpus.get("label_column") else None
            text = conditioning.marked(text, self.labels, columns)
        text, skipped = self._representable(text, unknown, leave_out)
        if not text:
            raise GentextError("nothing to evaluate: the text is empty")
        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise GentextError("the evaluation text needs at least two tokens")
        result = {**self._honest(self._scores(ids, characters(self.tokenizer, text, ids), seq_len), text), **skipped}
        if self.labels:
            pairs = conditioning.pairs_from_marks(text, self.labels)
            with self._eval_mode():
                result.update(conditioning.label_accuracy(self.model, self.tokenizer, pairs, self.labels, self.device))
        return result

    def caption(self, image, **settings: Any) -> list[str]:
        """Captions of a picture (a path or a PIL image) from a run trained with --condition image;
        settings as for generate()."""
        if not self.captions:
            raise GentextError("this run does not caption pictures (train one with --condition image)")
        return captioning.caption(self, image, **settings)

    def sample_label_accuracy(self, samples: int, max_new_tokens: int = 200, seed: int = 0) -> dict[str, Any]:
        """The share of `samples` texts generated from each label that are classified as that label."""
        return conditioning.sample_label_accuracy(self, samples, max_new_tokens, seed)

    def _honest(self, result: dict[str, Any], text: str | None) -> dict[str, Any]:
        """Bits per character that rank across levels: a word model's `<unk>` targets are also
        charged the cost of spelling the word (models/spelling.py). The closed-vocabulary figure
        is kept as `bpc_closed_vocab`. Without the text (a cache whose corpus moved) the closed
        figure is all there is, and `unknown_words` is None to say so."""
        if self.tokenizer.level != "word":
            return result
        words = [] if text == "" else None if text is None else self._unknown_words(text)
        spelled = self._speller().cost(words) if words else 0.0
        return {
            **result,
            "bpc": result["bpc"] + spelled / result["characters"] / math.log(2),
            "bpc_closed_vocab": result["bpc"],
            "unknown_words": None if words is None else len(words),
            "spelling_nats": spelled,
        }

    def _unknown_words(self, text: str, first: int = 1) -> list[str]:
        """The words of `text` from token `first` on (evaluation does not predict the first) that
        the model predicts as `<unk>`."""
        index = self.tokenizer.index
        return [w for w in self.tokenizer.split(text)[first:] if w not in index]

    def _speller(self) -> SpellingModel:
        if getattr(self, "_spelling", None) is None:
            tok = self.tokenizer
            self._spelling = SpellingModel([w for w in [*tok.vocab, *tok.rare_words] if w != tok.vocab[tok.unk_id]])
        return self._spelling

    def _unknown_word_text(self, ids) -> str | None:
        """The held-out text, needed only to price `<unk>`s at word level: "" when there is none."""
        if self.tokenizer.level != "word" or not np.any(np.asarray(ids) == self.tokenizer.unk_id):
            return ""
        try:
            return self._held_out_text()
        except GentextError:
            return None

    def _representable(self, text: str, unknown: str, leave_out) -> tuple[str, dict[str, Any]]:
        """The text without the characters to skip, and how many went (none: refuse them)."""
        if unknown not in ("error", "skip"):
            raise GentextError(f"--unknown must be error or skip, got {unknown!r}")
        drop = self.tokenizer.unknown_chars(text)
        if drop and unknown == "error":
            shown = ", ".join(repr(c) for c in sorted(drop)[:20])
            raise GentextError(
                f"the text has {len(drop)} character(s) the model has never seen: {shown}; "
                "pass --unknown skip to leave them out of the loss"
            )
        drop |= set(leave_out)
        if not drop:
            return text, {}
        kept = text.translate({ord(c): None for c in drop})
        skipped = len(text) - len(kept)
        return kept, {"skipped_characters": skipped, "skipped_share": skipped / max(len(text), 1)}

    def _scores(self, ids, chars: int, seq_len: int) -> dict[str, Any]:
        nats, count = evaluate(self.model, ids, seq_len, self.device, batch_size=16)
        loss = nats / count
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bpc": nats / chars / math.log(2),
            "tokens": count,
            "characters": chars,
        }

    def _held_out_ids(self) -> tuple[Any, int] | None:
        """The held-out ids from the token cache (a memmap: memory stays flat) and the characters
        they predict, or None when the cache no longer holds them."""
        data = held_out(self.config)
        if data is None:
            return None
        return data.val, max(data.val_chars - len(self.tokenizer.decode(data.val[:1])), 1)

    def score(self, text: str, unknown: str = "error", label: str | None = None) -> dict[str, Any]:
        """Log-probability of `text`: each token given the ones before it, the first given the start
        (the same priming as an empty prompt; from `label` for a labelled run). Totals in nats, plus
        per-token values. `unknown="skip"` scores the text without the characters the model cannot
        represent."""
        text, skipped = self._representable(text, unknown, frozenset())
        if not text:
            raise GentextError("nothing to score: the text is empty")
        ids = self.tokenizer.encode(text).tolist()
        primer = self._prompt_ids("", label)
        inputs = torch.tensor([primer + ids[:-1]], device=self.device)
        with self._eval_mode(), torch.inference_mode():
            logits, _ = self.model(inputs, None)  # (1, P + T - 1, V)
            logp = torch.log_softmax(logits[0, len(primer) - 1 :].float(), dim=-1)  # (T, V)
            token_logp = logp.gather(1, torch.tensor(ids, device=self.device)[:, None])[:, 0].tolist()
        total = sum(token_logp)
        loss = -total / len(ids)
        spelled = self._speller().cost(self._unknown_words(text, 0)) if self.tokenizer.level == "word" else 0.0
        return {
            "log_prob": total,
            "loss": loss,
            "perplexity": math.exp(min(loss, 700.0)),
            "bpc": (spelled - total) / len(text) / math.log(2),  # honest across levels, as evaluate's
            "tokens": len(ids),
            "characters": len(text),
            **skipped,
            "per_token": [
                {"token": self.tokenizer.decode([i]), "log_prob": lp} for i, lp in zip(ids, token_logp, strict=True)
            ],
        }

    def _corpus(self):
        stored = dict(self.config.get("corpus", {}))
        sources = stored.pop("sources", None) or stored.get("paths") or [stored.get("builtin", "?")]
        try:
            return load_corpus(from_dict(CorpusConfig, stored, "config.json 'corpus'"))
        except GentextError as exc:
            raise GentextError(
                f"cannot re-read the training corpus ({exc}); this run needs {', '.join(map(str, sources))} "
                "(or pass the text to evaluate)"
            ) from None

    def _held_out_text(self) -> str:
        return self._corpus().val

    def novelty(
        self, samples: int = 5, max_new_tokens: int = 500, span: int = 20, training_text: str | None = None, **settings
    ) -> dict[str, Any]:
        """Generate `samples` texts and measure how much is copied verbatim from the training text:
        the share of `span`-character windows found in it and the longest copied span."""
        training = training_text if training_text is not None else self._corpus().train
        texts = self.generate("", self.default_label, max_new_tokens=max_new_tokens, num_samples=samples, **settings)
        result = novelty(texts, training, span)
        return {
            "samples": samples,
            "span": span,
            "windows": result.windows,
            "copied_share": result.copied_share,
            "longest_copy": result.longest_copy,
            "longest_example": result.longest_example,
        }

    def generation_speed(self, max_new_tokens: int = 200, num_samples: int = 1) -> float:
        """Generated tokens per second (all samples together), sampling at temperature 1."""
        start = time.perf_counter()
        self.generate(
            "", self.default_label, max_new_tokens=max_new_tokens, num_samples=num_samples, temperature=1.0, seed=0
        )
        return max_new_tokens * num_samples / (time.perf_counter() - start)

    def info(self) -> dict[str, Any]:
        metrics = checkpoint.read_metrics(self.run_dir) if self.run_dir else []
        evals = [m["val_loss"] for m in metrics if "val_loss" in m]
        return {
            "run": str(self.run_dir) if self.run_dir else None,
            "model": self.config.get("model"),
            "tokenizer": {"level": self.tokenizer.level, "vocab_size": self.tokenizer.vocab_size},
            "parameters": self.model.num_parameters(),
            "corpus": self.config.get("corpus", {}).get("sources"),
            "result": self.config.get("result"),
            "best_val_loss": min(evals) if evals else None,
            "evaluations": len(evals),
        }
