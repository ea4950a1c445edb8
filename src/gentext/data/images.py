"""Pictures for captioning (`--condition image`): read with Pillow, resized and normalised.

A captions file has `image<TAB>caption` lines, image paths relative to the file (several captions
per image allowed); a folder stands for its `captions.tsv`. Any size of PNG or JPEG is read as RGB,
resized to IMAGE_SIZE x IMAGE_SIZE and scaled to [-1, 1]. A path ending in `.npy` is instead a
precomputed feature vector (D,) or map (S, D) from any vision model (read without unpickling). A
missing or broken file is an error naming it, before any training starts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gentext.errors import GentextError

IMAGE_SIZE = 64


def load_features(path: Path) -> torch.Tensor:
    """A precomputed feature vector (D,) or map (S, D) from any vision model, saved with numpy."""
    try:
        array = np.load(path, allow_pickle=False)  # never unpickles
    except FileNotFoundError:
        raise GentextError(f"{path}: no such feature file") from None
    except (OSError, ValueError) as exc:
        raise GentextError(f"{path}: not a readable .npy array ({exc.__class__.__name__})") from None
    if array.ndim not in (1, 2) or not np.issubdtype(array.dtype, np.number):
        raise GentextError(f"{path}: a feature file holds one vector (D,) or a map (S, D), got shape {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def load_image(image, size: int = IMAGE_SIZE) -> torch.Tensor:
    """A path or a PIL image -> float tensor (3, size, size) in [-1, 1]; a `.npy` path -> its
    precomputed features (load_features)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(image, (str, Path)) and str(image).endswith(".npy"):
        return load_features(Path(image))
    name = str(image) if not isinstance(image, Image.Image) else "the image"
    try:
        picture = image if isinstance(image, Image.Image) else Image.open(image)
        picture = picture.convert("RGB").resize((size, size), Image.BILINEAR)
    except FileNotFoundError:
        raise GentextError(f"{name}: no such image") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise GentextError(f"{name}: not a readable image ({exc.__class__.__name__})") from None
    array = np.asarray(picture, dtype=np.float32) / 127.5 - 1.0  # (size, size, 3)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_captions(path: str | Path) -> list[tuple[Path, str]]:
    """(image path, caption) of a captions file or a folder's captions.tsv."""
    path = Path(path)
    if path.is_dir():
        path = path / "captions.tsv"
    if not path.is_file():
        raise GentextError(f"{path}: no such captions file (image<TAB>caption lines)")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or not parts[0].strip() or not parts[1].strip():
            raise GentextError(f"{path}:{number}: expected image<TAB>caption, got {line[:60]!r}")
        pairs.append((path.parent / parts[0].strip(), parts[1].strip()))
    if not pairs:
        raise GentextError(f"{path}: no captions")
    return pairs


def load_images(paths: list[Path], size: int = IMAGE_SIZE) -> torch.Tensor:
    """Every distinct image once, as one tensor (N, 3, size, size) (or (N, D) / (N, S, D) features),
    in the order given."""
    if not paths:
        return torch.zeros(0, 3, size, size)
    loaded = [load_image(p, size) for p in paths]
    shapes = {tuple(t.shape) for t in loaded}
    if len(shapes) > 1:
        raise GentextError(f"pictures and feature files must all have one shape; found {sorted(shapes)[:3]}")
    return torch.stack(loaded)


HOLD_OUT_EVERY = 10


def held_out_pictures(pairs: list[tuple]) -> list:
    """The pictures held out for validation: every 10th distinct picture in order of first
    appearance, with all its captions (training and evaluation share this one rule)."""
    names = list(dict.fromkeys(image for image, _ in pairs))
    return [name for i, name in enumerate(names) if (i + 1) % HOLD_OUT_EVERY == 0]
