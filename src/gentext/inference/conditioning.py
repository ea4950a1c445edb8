"""Measuring that a label steers (`--condition label`): the generative model as a classifier.

A held-out text is classified as argmax over labels of log P(text | label): the text (and the
newline that ends it) scored after "\\n" + the label's mark, for every label at once. Label accuracy
is the share of held-out texts whose most likely label is their own; sample label accuracy does the
same for texts the model generated from a label it was asked for. `RunCondition` is what
generation and evaluation ask of any run's condition.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Protocol

import torch

from gentext.data.conditions import LABEL_BASE, is_mark, mark
from gentext.errors import GentextError

ROWS = 256  # (text, label) rows scored in one forward pass


class RunCondition(Protocol):
    """What generation and evaluation ask of a run's condition (gentext/conditions implements it,
    above this layer: a loaded model is handed its condition). It is also the corpus's `Shaping`
    (data/corpus.py), which re-reading a run's held-out text needs."""

    labels: list[str]
    takes: str | None  # the generate() argument it generates from: label, source, image or None
    one_stream: bool  # the text is one stream (dynamic evaluation reads one)
    length_penalty: float

    def decoder_start(self, tok) -> int | None: ...

    def never_sampled(self, tok) -> list[int]: ...

    def prompt(self, model, prompt: str, label=None, source=None, image=None): ...

    def check_prompt(self, model, prompt: str, label=None, source=None) -> None: ...

    def evaluate(self, model, paths: list[str] | None, text: str | None, **options: Any) -> dict[str, Any]: ...


def mark_ids(tokenizer, count: int) -> list[int]:
    """The token id of each label mark that is one token (char and word level); byte-level BPE
    spells a mark in several byte tokens that other text may use, so nothing is withheld there."""
    ids = []
    for i in range(count):
        try:
            encoded = tokenizer.encode(mark(i))
        except GentextError:  # a character vocabulary without this mark: the label never occurred
            continue
        if len(encoded) == 1:
            ids.append(int(encoded[0]))
    return ids


@torch.inference_mode()
def label_log_likelihoods(model, tokenizer, texts: list[str], count: int, device) -> list[list[float]]:
    """log P(text + "\\n" | "\\n" + mark(k)) for each text and each of `count` labels (nats)."""
    prefixes = [tokenizer.encode("\n" + mark(k)).tolist() for k in range(count)]
    bodies = [tokenizer.encode(text + "\n").tolist() for text in texts]
    encoded = {
        (t, k): (prefixes[k] + body, len(prefixes[k]) - 1) for t, body in enumerate(bodies) for k in range(count)
    }
    by_length = defaultdict(list)  # rows of one length go through the model together
    for key, (ids, _) in encoded.items():
        by_length[len(ids)].append(key)
    scores = [[0.0] * count for _ in texts]
    for keys in by_length.values():
        for start in range(0, len(keys), ROWS):
            chunk = keys[start : start + ROWS]
            block = torch.tensor([encoded[key][0] for key in chunk], device=device)
            logp, _ = model(block[:, :-1], None, targets=block[:, 1:])  # (rows, T)
            for row, (t, k) in enumerate(chunk):
                scores[t][k] = logp[row, encoded[(t, k)][1] :].double().sum().item()
    return scores


def label_accuracy(model, tokenizer, pairs: list[tuple[str, str]], labels: list[str], device) -> dict:
    """Share of (label, text) pairs whose text is most likely under its own label, and a per-label
    breakdown (pairs whose label the run does not know count as wrong)."""
    texts = [text for _, text in pairs]
    scores = label_log_likelihoods(model, tokenizer, texts, len(labels), device)
    per_label: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (label, _), row in zip(pairs, scores, strict=True):
        best = labels[max(range(len(labels)), key=row.__getitem__)]
        per_label[label][0] += best == label
        per_label[label][1] += 1
    right = sum(r for r, _ in per_label.values())
    return {
        "label_accuracy": right / max(len(pairs), 1),
        "label_pairs": len(pairs),
        "label_accuracy_by_label": {k: r / n for k, (r, n) in sorted(per_label.items())},
    }


def pairs_from_marks(text: str, labels: list[str]) -> list[tuple[str, str]]:
    """(label, text) of every document of a marked text (a labelled run's held-out split)."""
    return [
        (labels[ord(line[0]) - LABEL_BASE], line[1:])
        for line in text.splitlines()
        if len(line) > 1 and is_mark(line[0]) and ord(line[0]) - LABEL_BASE < len(labels)
    ]


def marked(text: str, labels: list[str], columns: tuple[str, str] | None = None) -> str:
    """A labelled text as the model reads it: already marked (a held-out split) stays as it is;
    `label<TAB>text` lines (or CSV rows, given its two columns) get their label's mark (an unknown
    label is an error listing the known)."""
    from gentext.data.conditions import check_label, csv_as_tsv, read_pairs

    if text and is_mark(text.lstrip("\n")[:1] or " "):
        return text
    if columns:
        text = csv_as_tsv(text, columns, [])
    return "".join(mark(check_label(label, labels)) + body + "\n" for label, body in read_pairs(text.splitlines()))


def sample_label_accuracy(model, samples: int, max_new_tokens: int = 200, seed: int = 0) -> dict:
    """Generate `samples` texts from each label (temperature 1) and classify each by the label under
    which it is most likely: the share classified as the label asked for."""
    pairs = []
    for label in model.labels:
        texts = model.generate("", label, max_new_tokens=max_new_tokens, num_samples=samples, seed=seed)
        pairs += [(label, t.strip("\n")) for t in texts if t.strip("\n")]
    with model.eval_mode():
        scored = label_accuracy(model.model, model.tokenizer, pairs, model.labels, model.device)
    return {"sample_label_accuracy": scored["label_accuracy"], "samples_per_label": samples}
