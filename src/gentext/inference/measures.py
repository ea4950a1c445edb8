"""What a loaded model measures: loss, perplexity and honest bits per character on any text (or the
run's held-out split), the log-probability of one text, label accuracy, novelty and speed. A mixin
of `TextModel` (inference/textmodel.py), which holds the model, tokenizer and generation."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from gentext.data.corpus import load_corpus
from gentext.data.tokencache import held_out
from gentext.errors import GentextError
from gentext.inference import conditioning
from gentext.inference.novelty import novelty
from gentext.models import start_state
from gentext.models.cache import CacheModel
from gentext.models.mixture import MixtureModel, fitted_part
from gentext.models.scoring import evaluate, evaluate_dynamic
from gentext.models.spelling import SpellingModel


def characters(tok, text: str, ids: np.ndarray) -> int:
    """Characters of `text` that evaluation predicts: all but those of the first token."""
    return max(len(text) - len(tok.decode(ids[:1])), 1)


class Measures:
    """evaluate / score / novelty / speed for a TextModel (its model, tokenizer, config, labels)."""

    def evaluate(
        self,
        paths: list[str] | None = None,
        text: str | None = None,
        seq_len: int = 256,
        unknown: str = "error",
        leave_out: set[str] | frozenset[str] = frozenset(),
        dynamic_lr: float | None = None,
    ) -> dict[str, Any]:
        """What the run's condition measures (gentext/conditions) on `text`, the files in `paths`,
        or (neither given) the run's held-out split: loss (nats/token), perplexity and bits per
        character of a text (`stream_figures`); a labelled run adds label accuracy, a seq2seq run
        and a captioner report their outputs' exact match, chrF and BLEU instead."""
        if dynamic_lr is not None:
            self._check_dynamic(dynamic_lr)
        options = {"seq_len": seq_len, "unknown": unknown, "leave_out": leave_out, "dynamic_lr": dynamic_lr}
        return self.condition.evaluate(self, paths, text, **options)

    def stream_figures(
        self, text: str, seq_len: int = 256, unknown: str = "error", leave_out=frozenset(), dynamic_lr=None
    ) -> dict[str, Any]:
        """Loss, perplexity and bits per character of one text. `unknown="skip"` leaves characters
        the model cannot represent (and `leave_out`) out of the text, and says how many; the
        default refuses them. `dynamic_lr` adds the figures of dynamic evaluation at that
        learning rate under "dynamic" (models/scoring.py), beside the plain ones."""
        text, skipped = self.representable(text, unknown, leave_out)
        if not text:
            raise GentextError("nothing to evaluate: the text is empty")
        ids = self.tokenizer.encode(text)
        if len(ids) < 2:
            raise GentextError("the evaluation text needs at least two tokens")
        result = {**self._honest(self._scores(ids, characters(self.tokenizer, text, ids), seq_len), text), **skipped}
        return self._dynamic(result, ids, dynamic_lr)

    def held_out_figures(self, held, seq_len: int = 256, dynamic_lr=None, **_: Any) -> dict[str, Any]:
        """`stream_figures` of the held-out ids (`held_out_ids`), read from the token cache: nothing
        is left out of them, so `unknown` and `leave_out` change nothing."""
        ids, chars, left_out = held
        result = self._honest(self._scores(ids, chars, seq_len), self._unknown_word_text(ids))
        return self._dynamic({**result, **left_out}, ids, dynamic_lr)

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
            return self.held_out_text()
        except GentextError:
            return None

    def representable(self, text: str, unknown: str, leave_out) -> tuple[str, dict[str, Any]]:
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

    def _check_dynamic(self, lr: float) -> None:
        if not lr > 0 or not math.isfinite(lr):
            raise GentextError(f"--dynamic-eval needs a learning rate > 0, got {lr}")
        if not self.condition.one_stream:
            raise GentextError("dynamic evaluation reads one stream of text: not for a conditional run")
        if not any(p.is_floating_point() for p in self.model.parameters()):
            raise GentextError("dynamic evaluation adapts a network's weights; a Markov chain has none")

    def _dynamic(self, result: dict[str, Any], ids, lr: float | None) -> dict[str, Any]:
        """`result` with the dynamic evaluation's figures on the same ids, charged the same spelling
        cost (a word model's `<unk>`s), when `lr` is given."""
        if lr is None:
            return result
        nats, count = evaluate_dynamic(self.model, ids, lr, self.device)
        spelled = result.get("spelling_nats", 0.0)
        loss = nats / count
        dynamic = {"lr": lr, "loss": loss, "perplexity": math.exp(min(loss, 700.0)), "tokens": count}
        return {**result, "dynamic": {**dynamic, "bpc": (nats + spelled) / result["characters"] / math.log(2)}}

    def held_out_ids(self) -> tuple[Any, int, dict] | None:
        """The held-out ids from the token cache (a memmap: memory stays flat), the characters they
        predict and what was left out, or None when the cache no longer holds them. A mixed or
        cached model was fitted on the split's first tokens (models/mixture.fitted_part): those
        are left out, so the figure is on text nothing was chosen on, as training reports it."""
        data = held_out(self.config)
        if data is None:
            return None
        fitted = fitted_part(len(data.val)) if isinstance(self.model, (MixtureModel, CacheModel)) else 0
        ids = data.val[fitted:]
        chars = max(data.val_chars - len(self.tokenizer.decode(data.val[: fitted + 1])), 1)
        return ids, chars, {"fitted_tokens_left_out": fitted} if fitted else {}

    def score(
        self, text: str, unknown: str = "error", label: str | None = None, source: str | None = None, image=None
    ) -> dict[str, Any]:
        """Log-probability of `text`: each token given the ones before it, the first given the start
        (the same priming as an empty prompt; from `label`, `source` or `image` for a conditional
        run). Totals in nats, plus per-token values. `unknown="skip"` scores the text without the
        characters the model cannot represent."""
        text, skipped = self.representable(text, unknown, frozenset())
        if not text:
            raise GentextError("nothing to score: the text is empty")
        ids, token_logp = self._token_scores(text, label, source, image)
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

    def _token_scores(self, text: str, label=None, source=None, image=None, top: int = 0, primed: bool = True):
        """The ids of `text` and each one's log-probability given the ones before it (the first given
        the start an empty prompt primes with; without `primed`, the first is the start and is not
        scored); with `top`, also each position's `top` most likely ids and theirs. The one scoring
        path of `score`, `eval` and the OpenAI echo."""
        ids = self.tokenizer.encode(text).tolist()
        start = self._prompt("", label, source, image)
        primer = start.ids if primed else ids[:1]
        ids = ids if primed else ids[1:]
        inputs = torch.tensor([primer + ids[:-1]], device=self.device)
        targets = torch.tensor([primer[1:] + ids], device=self.device)
        with self.eval_mode(), torch.inference_mode():
            state = start_state(self.model, start.condition, self.device)
            logp, _ = self.model(inputs, state, targets=targets)  # (1, P + T - 1): no (T, V) distributions
            token_logp = logp[0, len(primer) - 1 :].double().tolist()
            if not top:
                return ids, token_logp
            logits, _ = self.model(inputs, start_state(self.model, start.condition, self.device))
            best = torch.log_softmax(logits[0, len(primer) - 1 :].float(), -1).topk(min(top, logits.shape[-1]))
        pairs = zip(best.indices.tolist(), best.values.tolist(), strict=True)
        return ids, token_logp, [list(zip(i, v, strict=True)) for i, v in pairs]

    def prompt_logprobs(self, text: str, top: int = 0) -> list[dict]:
        """Each token of `text` as OpenAI's echo reports it: its id, its log-probability given the
        tokens before it and the `top` most likely alternatives; the first token's are None (nothing
        comes before it: it is the start the rest is read from). So the echo of the start token an
        empty prompt primes with ("\n", /tokenizer_info's eos_token) followed by a text sums to
        `score(text)`'s log-probability: the same numbers, by the same path."""
        first = self.tokenizer.encode(text).tolist()[:1]
        if len(self.tokenizer.encode(text)) < 2:
            return [{"id": i, "logprob": None, "top": None} for i in first]
        scored = self._token_scores(text, top=top, primed=False)
        ids, values = scored[0], scored[1]
        alternatives = scored[2] if top else [[] for _ in ids]
        rest = [{"id": i, "logprob": lp, "top": alt} for i, lp, alt in zip(ids, values, alternatives, strict=True)]
        return [{"id": first[0], "logprob": None, "top": None}, *rest]

    def _corpus(self):
        stored = self.config.corpus
        sources = self.config.sources or stored.paths or [stored.builtin]
        try:
            return load_corpus(stored, self.condition)
        except GentextError as exc:
            raise GentextError(
                f"cannot re-read the training corpus ({exc}); this run needs {', '.join(map(str, sources))} "
                "(or pass the text to evaluate)"
            ) from None

    def held_out_text(self) -> str:
        return self._corpus().val

    def training_text(self) -> str:
        return self._corpus().train

    def novelty(
        self, samples: int = 5, max_new_tokens: int = 500, span: int = 20, training_text: str | None = None, **settings
    ) -> dict[str, Any]:
        """Generate `samples` texts and measure how much is copied verbatim from the training text:
        the share of `span`-character windows found in it and the longest copied span."""
        training = training_text if training_text is not None else self.training_text()
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
