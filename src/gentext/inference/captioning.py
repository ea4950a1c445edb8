"""Captioning a picture, and measuring captions (issue 18): BLEU and chrF against every reference
of a held-out picture (`sacrebleu`), and for the `shapes` corpus the attribute accuracy: the share
of pictures whose caption names the colour and kind of every shape, and no other.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from gentext.data.shapes import attributes
from gentext.errors import GentextError


def caption(model, image, **settings) -> list[str]:
    """`num_samples` captions of one picture (a path, a PIL image or a tensor), as `generate` samples."""
    return [t.strip() for t in model.generate("", image=image, **settings)]  # a word decoder spaces the first word


def evaluate_captions(model, pairs: list[tuple[str, str]], max_images: int = 500) -> dict[str, Any]:
    """(picture path, caption) pairs -> BLEU, chrF, attribute accuracy of greedy captions of up to
    `max_images` pictures, against all of each picture's references."""
    try:
        import sacrebleu
    except ImportError:
        raise GentextError("caption evaluation needs sacrebleu: pip install 'gentext[seq2seq]'") from None
    references: dict[str, list[str]] = defaultdict(list)
    for image, text in pairs:
        references[str(image)].append(text)
    images = list(references)[:max_images]
    hypotheses = [caption(model, image, temperature=0, max_new_tokens=120)[0] for image in images]
    depth = max(len(references[i]) for i in images)
    streams = [[references[i][min(k, len(references[i]) - 1)] for i in images] for k in range(depth)]
    named = [attributes(h) == attributes(references[i][0]) for h, i in zip(hypotheses, images, strict=True)]
    return {
        "images": len(images),
        "bleu": sacrebleu.corpus_bleu(hypotheses, streams).score,
        "chrf": sacrebleu.corpus_chrf(hypotheses, streams).score,
        "attribute_accuracy": sum(named) / max(len(named), 1),
        "examples": [{"image": i, "caption": h} for i, h in list(zip(images, hypotheses, strict=True))[:5]],
    }


def picture_pairs(model, paths: list[str] | None) -> list[tuple[str, str]]:
    """(picture, caption) of captions files, or the run's held-out pictures (every 10th)."""
    from gentext.data.images import held_out_pictures, read_captions

    if paths:
        return [(str(p), c) for path in paths for p, c in read_captions(path)]
    pairs = read_captions(model.config["corpus"]["sources"][0])
    held = set(held_out_pictures(pairs))
    return [(str(p), c) for p, c in pairs if p in held]
