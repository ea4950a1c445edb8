"""Captioning data (`--condition image`): pictures in, captions out, on the one training loop.

The captions file is read whole (captioning data is pictures plus short lines), every picture is
loaded once before anything is written (a broken file is an error naming it), every 10th picture
is held out with all its captions, a word tokenizer is fitted on the captions (or the run's own,
on resume), and the pair feed (training/feeds.py) trains on (picture index, caption ids) pairs
with the picture batch as the condition `initial_state` takes.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.data.conditions import SOURCE_END, pair_ids
from gentext.data.images import IMAGE_SIZE, held_out_pictures, load_images, read_captions
from gentext.data.tokenizers import WordTokenizer
from gentext.errors import GentextError
from gentext.runconfig import RunConfig
from gentext.training.feeds import PairFeed, pairs_hash


@dataclass
class Pictures:
    """A captions corpus read whole: every picture, and (picture index, caption ids) per split."""

    images: torch.Tensor  # (N, 3, S, S) pictures, or (N, D) / (N, S, D) precomputed features
    features: int  # the features' width; 0 for pictures
    tokenizer: WordTokenizer
    train: list
    val: list
    key: str  # the pictures' fingerprint: resume checks the pictures too


def prepare(corpus_cfg: CorpusConfig, model_cfg: ModelConfig, tok=None) -> tuple[WordTokenizer, Pictures]:
    """Read the captions and every picture; fit the tokenizer unless given; size the model."""
    if len(corpus_cfg.paths) != 1:
        raise GentextError("--condition image takes one captions file or folder (picture<TAB>caption lines)")
    data = captions_data(corpus_cfg.paths[0], tok)
    model_cfg.kind, model_cfg.feature_size = "captioner", data.features
    model_cfg.vocab_size = data.tokenizer.vocab_size
    model_cfg.dropout = model_cfg.dropout or 0.0
    model_cfg.validate()
    return data.tokenizer, data


def captions_data(path, tok=None) -> Pictures:
    """Pictures (N, 3, S, S), the tokenizer, and (picture index, caption) lists per split."""
    pairs = read_captions(path)
    names = list(dict.fromkeys(image for image, _ in pairs))
    index = {name: i for i, name in enumerate(names)}
    images = load_images(names)
    held = {index[name] for name in held_out_pictures(pairs)}
    # Words, not characters: a caption is ~15 words but ~80 characters, and the decoder steps once per
    # token, so words train several times more captions per minute (RESULTS.md, "Captioning").
    tok = tok or WordTokenizer.fit([caption + "\n" for _, caption in pairs] + ["\n" + SOURCE_END + "\n"])
    split: dict[bool, list] = {False: [], True: []}
    for image, caption in pairs:
        split[index[image] in held].append((np.int64(index[image]), tok.encode(caption)))
    if not split[False]:
        raise GentextError(f"{path}: too few pictures to hold any out and still train")
    features = images.shape[-1] if images.dim() in (2, 3) else 0  # .npy features (N, D) or (N, S, D)
    key = hashlib.sha256(images.numpy().tobytes()).hexdigest()[:16]  # resume checks the pictures too
    return Pictures(images, features, tok, split[False], split[True], key)


def feed(data: Pictures, cfg: TrainConfig):
    """The pair feed's maker (rows -> PairFeed): picture indices become the picture batch."""
    images = data.images

    def pictures(sources, device):  # picture indices -> each picture once (P, 3, S, S) and each row's (B,)
        unique, rows = np.unique(np.asarray(sources, dtype=np.int64), return_inverse=True)
        return images[torch.from_numpy(unique)].to(device), torch.from_numpy(rows.reshape(-1)).to(device)

    ids = pair_ids(data.tokenizer)
    key = data.key + pairs_hash(data.train)  # the pictures and the captions
    return lambda rows: PairFeed(data.train, data.val, ids, cfg, rows, pictures, key, grouped=True)


def run_config(corpus_cfg: CorpusConfig, model_cfg: ModelConfig, train_cfg: TrainConfig) -> RunConfig:
    return RunConfig(
        model=model_cfg,
        tokenizer=TokenizerConfig(level="word"),  # captions are words (captions_data says why)
        train=train_cfg,
        corpus=dataclasses.replace(corpus_cfg, mode="lines"),
        sources=(str(corpus_cfg.paths[0]),),
        image_size=IMAGE_SIZE,  # the size every picture is read at
    )
