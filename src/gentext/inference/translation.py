"""Evaluating a sequence-to-sequence run on held-out pairs: per-token loss (teacher forced) and, for
greedy decoding and beam search side by side, exact match, chrF and BLEU through `sacrebleu` (the
reference implementation everyone quotes), on pairs the model never trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gentext.data.conditions import SOURCE_END, cut_pairs, is_reserved, pair_ids, read_pairs
from gentext.errors import GentextError
from gentext.models.scoring import pair_loss

MAX_PAIRS = 1000  # decoding is one generation per pair: the first this many held-out pairs


def held_out_pairs(text: str) -> list[tuple[str, str]]:
    """(source, target) of a paired text: the run's held-out split (source SOURCE_END target lines)
    or a `source<TAB>target` file."""
    lines = [line for line in text.splitlines() if line.strip()]
    if lines and all(SOURCE_END in line for line in lines):
        return [tuple(line.split(SOURCE_END, 1)) for line in lines]  # type: ignore[misc]
    pairs = read_pairs(lines)
    if any(is_reserved(c) for s, t in pairs for c in s + t):
        raise GentextError("the text uses private-use characters (plane 15) that gentext reserves for conditions")
    return pairs


def scores(hypotheses: list[str], references: list[str]) -> dict[str, float]:
    try:
        import sacrebleu
    except ImportError:
        raise GentextError("seq2seq evaluation needs sacrebleu: pip install 'gentext[seq2seq]'") from None
    exact = sum(h == r for h, r in zip(hypotheses, references, strict=True)) / max(len(references), 1)
    return {
        "exact_match": exact,
        "chrf": sacrebleu.corpus_chrf(hypotheses, [references]).score,
        "bleu": sacrebleu.corpus_bleu(hypotheses, [references]).score,
    }


def decodings(beams: int) -> tuple[tuple[str, dict], ...]:
    """How conditional outputs are scored, side by side: greedy, and beam search with `beams` beams."""
    return (("greedy", {"temperature": 0}), ("beam", {"num_beams": beams}))


def evaluate_pairs(model, pairs: list[tuple[str, str]], beams: int = 4, max_pairs: int = MAX_PAIRS) -> dict[str, Any]:
    """Loss per target token on every pair; greedy and beam-search scores on the first `max_pairs`."""
    tok = model.tokenizer
    text = "".join(s + SOURCE_END + t + "\n" for s, t in pairs)
    ids = pair_ids(tok)
    with model.eval_mode():
        nats, count = pair_loss(model.model, cut_pairs(tok.encode(text), ids[1], ids[0]), *ids, model.device)
    shown = pairs[:max_pairs]
    longest = max(len(tok.encode(t)) for _, t in shown) + 2 if shown else 1
    result: dict[str, Any] = {
        "loss": nats / max(count, 1),
        "tokens": count,
        "pairs": len(pairs),
        "scored_pairs": len(shown),
    }
    references = [t for _, t in shown]
    for name, settings in decodings(beams):
        outputs = [model.generate("", source=s, max_new_tokens=longest, **settings)[0].strip("\n") for s, _ in shown]
        result[name] = scores(outputs, references)
    result.update(result["greedy"])  # the headline figures: greedy decoding
    return result


def attention_matrix(model, source: str, max_new_tokens: int = 100) -> dict[str, Any]:
    """The greedy translation of `source` and where the decoder looked for each output token:
    {"output", "source_tokens", "output_tokens" (the last is the end), "weights" (rows: output tokens)}."""
    import torch

    if not model.pairs:
        raise GentextError("only a seq2seq run has attention over a source")
    tok = model.tokenizer
    output = model.generate("", source=source, temperature=0, max_new_tokens=max_new_tokens)[0].rstrip("\n")
    source_ids, out_ids = tok.encode(source.strip()).tolist(), tok.encode(output).tolist()
    with model.eval_mode(), torch.inference_mode():
        encoded = torch.tensor([source_ids], device=model.device)
        lengths = torch.tensor([len(source_ids)], device=model.device)
        decoder = torch.tensor([[model.decoder_start, *out_ids]], device=model.device)
        weights = model.model.attention((encoded, lengths), decoder)[: len(out_ids) + 1]  # (outputs + end, source)
    return {
        "output": output,
        "source_tokens": [tok.decode([i]) for i in source_ids],
        "output_tokens": [*(tok.decode([i]) for i in out_ids), "⏎"],
        "weights": weights.cpu().tolist(),
    }


def attention_picture(model, source: str, out: str, max_new_tokens: int = 100) -> tuple[str, str]:
    """Draw the attention matrix (output tokens x source tokens) of the greedy translation of
    `source` as a PNG at `out` (written atomically). Returns the output text and the path."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must precede pyplot
    import matplotlib.pyplot as plt

    from gentext import checkpoint

    found = attention_matrix(model, source, max_new_tokens)
    names = found["source_tokens"], found["output_tokens"]
    fig, ax = plt.subplots(figsize=(max(4, 0.35 * len(names[0]) + 2), max(3, 0.35 * len(names[1]) + 1.5)))
    ax.imshow(found["weights"], cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(names[0])), [n if n.strip() else "␣" for n in names[0]])
    ax.set_yticks(range(len(names[1])), [n if n.strip() else "␣" for n in names[1]])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    ax.set_title(f"{source.strip()} → {found['output']}"[:80])
    fig.tight_layout()
    checkpoint.atomic_write(Path(out), lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return found["output"], out
