"""The `shapes` captioning corpus: pictures drawn with Pillow from a seed, captions written from what
was drawn. Nothing is downloaded.

Each picture holds one to three shapes (circle, square, triangle), each of a colour, a size and a
place, on a varied background colour with pixel noise. Captions say what is there in several
phrasings: "a small red circle left of a blue square", "a blue square and a small red circle", ...
`make_shapes(dir, count, seed)` writes DIR/images/NNNNN.png and DIR/captions.tsv (`image<TAB>caption`,
three captions per picture). `attributes(caption)` reads the (colour, kind) pairs back out of a
caption, which is how evaluation checks that every shape was named right.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 220), "yellow": (235, 210, 40)}
KINDS = ("circle", "square", "triangle")
BACKGROUNDS = ((245, 245, 245), (200, 200, 200), (120, 120, 120), (230, 220, 200), (40, 40, 40))
SIZE = 64
CAPTIONS_PER_IMAGE = 3
_PAIR = re.compile(rf"\b({'|'.join(COLOURS)}) ({'|'.join(KINDS)})\b")


def _draw_shape(draw, kind: str, colour, box: tuple[int, int, int, int]) -> None:
    x0, y0, x1, y1 = box
    if kind == "circle":
        draw.ellipse(box, fill=colour)
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=colour)


def _picture(rng: random.Random):
    """One picture and the shapes on it, left to right: (size word, colour, kind)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (SIZE, SIZE), rng.choice(BACKGROUNDS))
    draw = ImageDraw.Draw(image)
    count = rng.randint(1, 3)
    slots = sorted(rng.sample(range(3), count))  # left, middle, right thirds: shapes never overlap
    shapes = []
    for slot in slots:
        big = rng.random() < 0.5
        side = rng.randint(16, 20) if big else rng.randint(9, 12)
        x = slot * SIZE // 3 + rng.randint(0, SIZE // 3 - side)
        y = rng.randint(4, SIZE - side - 4)
        colour, kind = rng.choice(list(COLOURS)), rng.choice(KINDS)
        _draw_shape(draw, kind, COLOURS[colour], (x, y, x + side, y + side))
        shapes.append(("large" if big else "small", colour, kind))
    pixels = image.load()
    for _ in range(SIZE * SIZE // 10):  # noise: a tenth of the pixels jittered
        px, py = rng.randrange(SIZE), rng.randrange(SIZE)
        r, g, b = pixels[px, py]
        jitter = rng.randint(-40, 40)
        pixels[px, py] = tuple(min(255, max(0, v + jitter)) for v in (r, g, b))
    return image, shapes


def _phrase(shape, with_size: bool) -> str:
    size, colour, kind = shape
    return f"a {size} {colour} {kind}" if with_size else f"a {colour} {kind}"


def captions(shapes, rng: random.Random) -> list[str]:
    """Several phrasings of one picture's shapes (left to right)."""
    sized = [_phrase(s, True) for s in shapes]
    plain = [_phrase(s, False) for s in shapes]
    if len(shapes) == 1:
        return [sized[0], plain[0], f"{sized[0]} on its own"]
    relation = " left of ".join(sized)
    listed = ", ".join(plain[:-1]) + " and " + plain[-1]
    shuffled = rng.sample(sized, len(sized))
    return [relation, listed, f"{len(shapes)} shapes: " + ", ".join(shuffled)]


def make_shapes(out: str | Path, count: int, seed: int = 0) -> Path:
    """Write `count` pictures and their captions under `out`; returns the captions file."""
    rng = random.Random(seed)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(count):
        image, shapes = _picture(rng)
        name = f"images/{i:05d}.png"
        image.save(out / name)
        lines += [f"{name}\t{c}\n" for c in captions(shapes, rng)]
    tmp = out / "captions.tsv.tmp"  # written whole, then renamed: never a half-written list
    tmp.write_text("".join(lines), encoding="utf-8")
    tmp.replace(out / "captions.tsv")
    return out / "captions.tsv"


def attributes(caption: str) -> list[tuple[str, str]]:
    """The (colour, kind) pairs a caption names, sorted (the order of mention does not matter)."""
    return sorted(_PAIR.findall(caption))
