"""`--condition source`: lines of `source<TAB>target`, each target generated from its source
(`--model seq2seq`: an encoder reads the source, an attention decoder writes the target).

The corpus becomes `source SOURCE_END target END` documents (data/conditions.py); the feed cuts
them into pairs and batches them padded, teacher forced (training/feeds.PairFeed); generation
primes the decoder with its start token and hands the source to `initial_state`; evaluation
decodes held-out sources and compares with their targets.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

from gentext.conditions.base import Condition
from gentext.config import CorpusConfig
from gentext.data.conditions import check_columns, cut_pairs, pair_ids, paired_documents
from gentext.errors import GentextError
from gentext.inference import translation
from gentext.inference.jobs import Prompt
from gentext.training.feeds import PairFeed
from gentext.training.mixing import Mixing


class Paired(Condition):
    name = "source"
    reads = "source<TAB>target lines"
    takes = "source"
    documents = True
    one_stream = False
    marks_documents = True
    teachable = False  # pairs, not one stream
    text_figures = False
    headline = ("loss", "exact_match", "chrf", "bleu")
    length_penalty = 0.0  # the source sets a translation's length: rank beams by probability alone

    def check_files(self, files: list[str], config: CorpusConfig) -> None:
        check_columns(files, self.name)

    def shape(self, pieces: Iterable[str], config: CorpusConfig, labels: dict[str, int]) -> Iterator[str]:
        return (paired_documents(piece) for piece in pieces)

    def check_trainable(self, tok, data, train_cfg) -> None:
        source_end, end = pair_ids(tok)
        if not cut_pairs(data.train[: 1 << 20], end, source_end):
            raise GentextError("no source<TAB>target pairs in the training text")

    def feed(self, tok, data, train_cfg, progress=False):
        ids = pair_ids(tok)
        train, val = (cut_pairs(part, ids[1], ids[0]) if part is not None else [] for part in (data.train, data.val))
        return lambda rows: PairFeed(train, val, ids, train_cfg, rows, key=data.key)

    def mixing(self, tok) -> Mixing:
        return Mixing(cache=False, chain=False)

    def decoder_start(self, tok) -> int | None:
        return pair_ids(tok)[0]  # SOURCE_END, an id the saved tokenizer holds

    def never_sampled(self, tok) -> list[int]:
        return [self.decoder_start(tok)]

    def prompt(self, model, prompt: str, label=None, source=None, image=None) -> Prompt:
        """The decoder's start token and the prompt (the start of the output), the input as the
        condition `initial_state` takes."""
        self.refuse_inputs(source=source, image=image)
        start = [self.decoder_start(model.tokenizer), *(model.tokenizer.encode(prompt).tolist() if prompt else [])]
        return Prompt(start, self.input_tensor(model, source, image))

    def input_tensor(self, model, source, image) -> torch.Tensor:
        """The source's ids (1, S) on the model's device."""
        if not source or not source.strip():
            raise GentextError("a seq2seq run generates from a source: give --source")
        return torch.tensor([model.tokenizer.encode(source.strip()).tolist()], device=model.device)

    def evaluate(self, model, paths, text, **options: Any) -> dict[str, Any]:
        """Loss, exact match, chrF and BLEU on held-out pairs (greedy and beams)."""
        return translation.evaluate_pairs(model, translation.held_out_pairs(self.read(model, paths, text)))

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        pairs, tokens = f"{result['pairs']:,} pairs", f"{result['tokens']:,} target tokens"
        lines = [f"loss {result['loss']:.4f} nats/token on {pairs} ({tokens})"]
        for name in ("greedy", "beam"):
            r = result[name]
            lines.append(
                f"{name:6s} on {result['scored_pairs']:,} pairs: exact match {r['exact_match']:.1%}, "
                f"chrF {r['chrf']:.1f}, BLEU {r['bleu']:.1f}"
            )
        return lines
