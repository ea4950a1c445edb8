"""Conditional generation beside the baseline a user would compare it with, on the same split.

    python benchmarks/bench_conditional.py                 # 5 minutes of training per task
    python benchmarks/bench_conditional.py --minutes 2 --tasks labels digits
    python benchmarks/bench_conditional.py --tiny          # seconds: every row, tiny budgets

Tasks (each gentext run with default flags and `--time-limit`; nothing tuned on the held-out part):
- labels: the built-in `names` corpus (`--condition label`): held-out label accuracy of the generative
  model as a classifier (mixed as trained, and its network alone), beside TF-IDF character
  1-4-grams + logistic regression (scikit-learn) trained on the same training lines; and the share
  of names generated from each label that this classifier gives the label asked for.
- dates, numbers (`--condition source`): held-out exact match of greedy decoding and of beam search
  (4 beams): beams must not lose to greedy. `numbers` spells integers in English words.
- shapes (`--condition image`, the built-in pictures): attribute accuracy (the caption names every
  shape's colour and kind; each picture has ten wordings, so no classifier baseline applies).
- digits: held-out exact caption accuracy, beside logistic regression and an SVM on the pixels
  (scikit-learn) with the same held-out pictures (every 10th): scikit-learn's bundled 8x8
  handwritten digits (1,797 real scans, no download), captioned with the digit's name.
Needs `pip install -e ".[bench,corpora,seq2seq]"`. Prints one table; the CPU is named above it.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np

import gentext
from gentext.conditions import condition_for
from gentext.config import CorpusConfig
from gentext.data.corpus import load_corpus
from gentext.data.images import held_out_pictures, read_captions
from gentext.data.shapes import make_shapes
from gentext.hardware import cpu_report
from gentext.inference.conditioning import pairs_from_marks

DIGITS = "zero one two three four five six seven eight nine".split()
TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
TINY = dict(hidden_size=32, embed_size=16, batch_size=8)
SAMPLES = 50  # generated names per label


def spelled(n: int) -> str:
    """English words for 0 <= n < 1,000,000."""
    if n < 10:
        return DIGITS[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else "-" + DIGITS[n % 10])
    if n < 1000:
        return DIGITS[n // 100] + " hundred" + ("" if n % 100 == 0 else " and " + spelled(n % 100))
    return spelled(n // 1000) + " thousand" + ("" if n % 1000 == 0 else " " + spelled(n % 1000))


def numbers_file(path: Path, count: int = 20000) -> Path:
    rng = random.Random(7)
    path.write_text("".join(f"{n}\t{spelled(n)}\n" for n in (rng.randrange(1_000_000) for _ in range(count))))
    return path


def digits_folder(root: Path) -> Path:
    """scikit-learn's handwritten digits as PNGs (8x8 greyscale, scaled up) and `image<TAB>name` lines."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        grey = (255 - pixels * 16).clip(0, 255).astype(np.uint8)  # ink dark on white, as scanned
        Image.fromarray(grey).resize((64, 64), Image.NEAREST).convert("RGB").save(root / f"images/{i:05d}.png")
        lines.append(f"images/{i:05d}.png\t{DIGITS[label]}\n")
    (root / "captions.tsv").write_text("".join(lines))
    return root


def _pixel_baselines(pairs: list[tuple[Path, str]]) -> dict[str, float]:
    """Logistic regression and an SVM on the pictures' pixels, the gentext held-out rule."""
    from PIL import Image
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    held = set(held_out_pictures(pairs))
    first = dict(reversed(pairs))  # one caption per picture (the first)
    x = {p: np.asarray(Image.open(p).convert("L").resize((16, 16)), dtype=np.float32).ravel() / 255 for p in first}
    train = [p for p in first if p not in held]
    test = [p for p in first if p in held]
    scores = {}
    for name, model in (("logistic regression", LogisticRegression(max_iter=3000)), ("SVM", SVC())):
        model.fit(np.stack([x[p] for p in train]), [first[p] for p in train])
        predicted = model.predict(np.stack([x[p] for p in test]))
        scores[name] = float(np.mean([a == first[p] for a, p in zip(predicted, test, strict=True)]))
    return scores


def captions_task(root: Path, folder: Path, options: dict, shapes: bool) -> list[dict]:
    summary = gentext.train(root / "run", paths=[str(folder)], condition="image", force=True, **options)
    result = gentext.load(root / "run").evaluate()  # the held-out pictures, greedy and 4 beams
    # shapes: ten wordings per picture, so a caption is right when it names every shape's colour and
    # kind (attribute accuracy); digits: one caption per picture, exact match
    figure, what = ("attribute_accuracy", "attribute accuracy") if shapes else ("exact_match", "exact caption")
    rows = [
        _row(f"gentext captioner, greedy, {what}", result["greedy"][figure], summary),
        _row(f"gentext captioner, 4 beams, {what}", result["beam"][figure], summary),
    ]
    return rows if shapes else rows + [_row(name, acc) for name, acc in _pixel_baselines(read_captions(folder)).items()]


def labels_task(root: Path, options: dict) -> list[dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    summary = gentext.train(root / "run", builtin="names", condition="label", force=True, **options)
    model, alone = gentext.load(root / "run"), gentext.load(root / "run", network_only=True)
    names = CorpusConfig(builtin="names", condition="label")
    corpus = load_corpus(names, condition_for(names))
    train, val = pairs_from_marks(corpus.train, model.labels), pairs_from_marks(corpus.val, model.labels)
    tfidf = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4)), LogisticRegression(max_iter=3000))
    tfidf.fit([t for _, t in train], [lab for lab, _ in train])
    baseline = float(np.mean(tfidf.predict([t for _, t in val]) == np.array([lab for lab, _ in val])))
    rows = [
        _row("gentext (network + a chain per label), by likelihood", model.evaluate()["label_accuracy"], summary),
        _row("gentext network alone (--no-mix)", alone.evaluate()["label_accuracy"], summary),
        _row("TF-IDF + logistic regression", baseline),
    ]
    # Does the label steer? Names generated from each label, read by the classifier (temperature 1,
    # the default, and with --min-p 0.1, which drops the smoothed chains' rare letters).
    for name, which, settings in (
        ("gentext", model, {}),
        ("gentext, --min-p 0.1", model, {"min_p": 0.1}),
        ("gentext network alone", alone, {}),
    ):
        asked, texts = [], []
        for label in which.labels:
            samples = which.generate("", label, max_new_tokens=40, num_samples=SAMPLES, seed=1, stop=["\n"], **settings)
            asked += [label] * len(samples)
            texts += [t.strip() for t in samples]
        share = float(np.mean(tfidf.predict(texts) == np.array(asked)))
        rows.append(_row(f"{name}: generated names the TF-IDF classifier gives the asked label", share))
    return rows


def pairs_task(root: Path, path: Path, options: dict) -> list[dict]:
    summary = gentext.train(root / "run", paths=[str(path)], condition="source", force=True, **options)
    result = gentext.load(root / "run").evaluate()
    return [
        _row("gentext seq2seq, greedy", result["greedy"]["exact_match"], summary),
        _row("gentext seq2seq, 4 beams", result["beam"]["exact_match"], summary),
    ]


def _row(method: str, accuracy: float, summary: dict | None = None) -> dict:
    minutes = None if summary is None else summary["seconds"] / 60
    return {"method": method, "accuracy": accuracy, "minutes": minutes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="training time per gentext run")
    parser.add_argument("--tasks", nargs="+", default=["labels", "dates", "numbers", "shapes", "digits"])
    parser.add_argument("--tiny", action="store_true", help="seconds per task, tiny models (a smoke test)")
    args = parser.parse_args()
    options = {**TINY, "steps": 30} if args.tiny else {"time_limit": args.minutes * 60}
    print(cpu_report())
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            root = Path(tmp) / task
            root.mkdir()
            started = time.perf_counter()
            if task == "labels":
                rows = labels_task(root, options)
            elif task in ("dates", "numbers"):
                path = numbers_file(root / "numbers.tsv", 2000 if args.tiny else 20000) if task == "numbers" else None
                if path is None:
                    from gentext.data.generated import dates

                    path = root / "dates.tsv"
                    path.write_text(dates(2000 if args.tiny else 20000, seed=5))
                rows = pairs_task(root, path, options)
            else:
                if task == "shapes":
                    # the count `gentext corpora --make shapes` draws by default
                    folder = make_shapes(root / "shapes", 120 if args.tiny else 6000, seed=3).parent
                else:
                    folder = digits_folder(root / "digits")
                rows = captions_task(root, folder, options, task == "shapes")
            table += [{"task": task, **row} for row in rows]
            print(f"{task}: {time.perf_counter() - started:.0f}s", flush=True)
    print("\n| task | method | held-out accuracy | training minutes |\n|---|---|---|---|")
    for row in table:
        minutes = "" if row["minutes"] is None else f"{row['minutes']:.1f}"
        print(f"| {row['task']} | {row['method']} | {100 * row['accuracy']:.1f}% | {minutes} |")


if __name__ == "__main__":
    main()
