"""Captioning a picture, and measuring captions: BLEU and chrF against every reference
of a held-out picture (`sacrebleu`), exact match, and for the `shapes` corpus the attribute accuracy:
the share of pictures whose caption names the colour and kind of every shape, and no other. Greedy
captions and beam search side by side, as translations are measured.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from gentext.data.shapes import attributes
from gentext.errors import GentextError
from gentext.inference.translation import decodings


def caption(model, image, **settings) -> list[str]:
    """`num_samples` captions of one picture (a path, a PIL image or a tensor), as `generate` samples."""
    return [t.strip() for t in model.generate("", image=image, **settings)]  # a word decoder spaces the first word


def evaluate_captions(model, pairs: list[tuple[str, str]], max_images: int = 500, beams: int = 4) -> dict[str, Any]:
    """(picture path, caption) pairs -> for greedy captions and for `beams`-beam search of up to
    `max_images` pictures: BLEU and chrF against all of each picture's references, exact match (the
    caption is one of them) and, where the references name shapes (the `shapes` corpus), attribute
    accuracy. The headline figures are greedy's, as for translations (translation.py)."""
    try:
        import sacrebleu
    except ImportError:
        raise GentextError("caption evaluation needs sacrebleu: pip install 'gentext[seq2seq]'") from None
    references: dict[str, list[str]] = defaultdict(list)
    for image, text in pairs:
        references[str(image)].append(text)
    images = list(references)[:max_images]
    if not images:
        raise GentextError("no pictures to evaluate: the captions list is empty")
    depth = max(len(references[i]) for i in images)
    streams = [[references[i][min(k, len(references[i]) - 1)] for i in images] for k in range(depth)]
    named_truth = [attributes(references[i][0]) for i in images]  # read once, for both decodings
    shapes = all(named_truth)  # other captions name no (colour, kind)
    result: dict[str, Any] = {"images": len(images)}
    for name, settings in decodings(beams):
        hypotheses = [caption(model, image, max_new_tokens=120, **settings)[0] for image in images]
        scores = {
            "bleu": sacrebleu.corpus_bleu(hypotheses, streams).score,
            "chrf": sacrebleu.corpus_chrf(hypotheses, streams).score,
            "exact_match": sum(h in references[i] for h, i in zip(hypotheses, images, strict=True)) / len(images),
        }
        if shapes:
            named = [attributes(h) == truth for h, truth in zip(hypotheses, named_truth, strict=True)]
            scores["attribute_accuracy"] = sum(named) / len(named)
        result[name] = scores
        if name == "greedy":
            result["examples"] = [{"image": i, "caption": h} for i, h in list(zip(images, hypotheses, strict=True))[:5]]
    result.update(result["greedy"])  # the headline figures: greedy decoding
    return result


def picture_pairs(model, paths: list[str] | None) -> list[tuple[str, str]]:
    """(picture, caption) of captions files, or the run's held-out pictures (every 10th)."""
    from gentext.data.images import held_out_pictures, read_captions

    if paths:
        return [(str(p), c) for path in paths for p, c in read_captions(path)]
    pairs = read_captions(model.config.sources[0])
    held = set(held_out_pictures(pairs))
    return [(str(p), c) for p, c in pairs if p in held]
