"""`--condition image`: a captions file (picture<TAB>caption) or a folder with captions.tsv; each
caption generated from its picture (`--model captioner`: a CNN encoder, an attention decoder).

A picture is a source the decoder attends to, so generation and the pair feed are the source
condition's; the pictures are read whole before training (training/captions.py) and evaluation
captions held-out pictures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from gentext.conditions.source import Paired
from gentext.config import CorpusConfig
from gentext.data.corpus import Shaping
from gentext.data.images import IMAGE_SIZE, load_image
from gentext.errors import GentextError
from gentext.inference import captioning
from gentext.runconfig import RunConfig
from gentext.training import captions


class Pictured(Paired):
    name = "image"
    reads = "picture<TAB>caption lines or a folder"
    takes = "image"
    headline = ("exact_match", "bleu", "chrf", "attribute_accuracy")  # attribute accuracy: `shapes` only

    def __init__(self, run: RunConfig | None = None):
        super().__init__(run)
        self.image_size = run.image_size if run is not None and run.image_size else IMAGE_SIZE

    def configure(self, corpus_cfg: CorpusConfig, tokenizer_flags: list[str]) -> None:
        super().configure(corpus_cfg, tokenizer_flags)
        if tokenizer_flags:
            raise GentextError(f"--condition image reads captions as words itself; drop {', '.join(tokenizer_flags)}")

    def check_files(self, files: list[str], config: CorpusConfig) -> None:
        """Captions files are read whole by `prepare`; re-read as a corpus (novelty), they are lines."""

    def shape(self, pieces: Iterable[str], config: CorpusConfig, labels: dict[str, int]) -> Iterator[str]:
        return Shaping.shape(self, pieces, config, labels)  # each caption line a document, as it is

    def prepare(self, corpus_cfg, tok_cfg, model_cfg, train_cfg, tok, progress: bool, origin=None):
        tok, data = captions.prepare(corpus_cfg, model_cfg, tok)
        return tok, data, captions.run_config(corpus_cfg, model_cfg, train_cfg)

    def feed(self, tok, data, train_cfg, progress=False):
        return captions.feed(data, train_cfg)

    def stream_data(self, data) -> None:
        return None  # pictures: no token stream to price in bits per character or to mix a chain into

    def never_sampled(self, tok) -> list[int]:
        return []

    def check_prompt(self, model, prompt: str, label=None, source=None) -> None:
        """The picture is checked where it is read."""

    def input_tensor(self, model, source, image) -> torch.Tensor:
        """The picture (1, 3, S, S) on the model's device."""
        if image is None:
            raise GentextError("a captioner generates from an image: gentext caption RUN PICTURE (API: caption())")
        picture = image if isinstance(image, torch.Tensor) else load_image(image, self.image_size)
        return picture.reshape(1, *picture.shape[-3:]).to(model.device)

    def evaluate(self, model, paths, text, **options: Any) -> dict[str, Any]:
        """BLEU, chrF, exact match (and the `shapes` attributes) of greedy and beam captions of
        the captions files in `paths`, or of the run's held-out pictures."""
        return captioning.evaluate_captions(model, captioning.picture_pairs(model, paths))

    def summary_lines(self, result: dict[str, Any]) -> list[str]:
        lines = [f"{result['images']:,} held-out pictures"]
        for name in ("greedy", "beam"):
            r = result[name]
            named = f", attribute accuracy {r['attribute_accuracy']:.1%}" if "attribute_accuracy" in r else ""
            figures = f"exact match {r['exact_match']:.1%}, BLEU {r['bleu']:.1f}, chrF {r['chrf']:.1f}{named}"
            lines.append(f"{name:6s} captions: {figures}")
        return lines + [f"  {Path(e['image']).name}: {e['caption']}" for e in result.get("examples", [])]
