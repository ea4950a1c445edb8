"""Training a captioner (`--condition image`): pictures in, captions out, on the pair loop.

The captions file is read whole (captioning data is pictures plus short lines), every picture is
loaded once before anything is written (a broken file is an error naming it), every 10th picture
is held out with all its captions, a word tokenizer is fitted on the captions, and
`training/pairs.py` trains on (picture index, caption ids) pairs with the picture batch as the
encoder's condition.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from gentext.config import ModelConfig, TrainConfig
from gentext.data.conditions import SOURCE_END, pair_ids
from gentext.data.images import IMAGE_SIZE, held_out_pictures, load_images, read_captions
from gentext.data.tokenizers import WordTokenizer
from gentext.errors import GentextError
from gentext.training.pairs import train_pairs


def captions_data(path: str | Path) -> dict:
    """Pictures (N, 3, S, S), the tokenizer, and (picture index, caption) lists per split."""
    pairs = read_captions(path)
    names = list(dict.fromkeys(image for image, _ in pairs))
    index = {name: i for i, name in enumerate(names)}
    images = load_images(names)
    held = {index[name] for name in held_out_pictures(pairs)}
    # Words, not characters: a caption is ~15 words but ~80 characters, and the decoder steps once per
    # token, so words train ~5x more captions per minute (measured: characters reached 27% attribute
    # accuracy in 10 minutes, still improving).
    tok = WordTokenizer.fit([caption + "\n" for _, caption in pairs] + ["\n" + SOURCE_END + "\n"])
    split: dict[bool, list] = {False: [], True: []}
    for image, caption in pairs:
        split[index[image] in held].append((index[image], caption))
    if not split[False]:
        raise GentextError(f"{path}: too few pictures to hold any out and still train")
    features = images.shape[-1] if images.dim() in (2, 3) else 0  # .npy features (N, D) or (N, S, D)
    return {"images": images, "features": features, "tokenizer": tok, "train": split[False], "val": split[True]}


def train_captions(data: dict, model, cfg: TrainConfig, out: Path, device, progress: bool):
    """Train `model` (a CaptionModel) on `data` (captions_data); returns TrainResult."""
    tok, images = data["tokenizer"], data["images"].to(device)
    ids = pair_ids(tok)
    model.source_end_id = ids[0]

    def encoded(split):
        return [(np.int64(i), tok.encode(caption)) for i, caption in split]

    def pictures(sources, device):  # picture indices -> the picture batch (B, 3, S, S)
        return images[torch.as_tensor(np.asarray(sources, dtype=np.int64), device=device)]

    return train_pairs(model, encoded(data["train"]), encoded(data["val"]), cfg, out, device, ids, progress, pictures)


def caption_model_config(tok, model: ModelConfig, feature_size: int = 0) -> ModelConfig:
    """The captioner's config: the caller's sizes, this tokenizer's vocabulary, the width of
    precomputed features (0: pictures, read by the model's own CNN)."""
    model.kind, model.vocab_size, model.feature_size = "captioner", tok.vocab_size, feature_size
    model.validate()
    return model


IMAGE_CONFIG = {"condition": "image", "image_size": IMAGE_SIZE}
NO_STREAM = SimpleNamespace(val=None)  # the summary's bits per character are for token streams
