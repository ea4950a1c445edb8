"""gentext: train generative recurrent text networks on any text and sample from them."""

from gentext.api import load, train
from gentext.config import CorpusConfig, ModelConfig, SampleConfig, TokenizerConfig, TrainConfig
from gentext.errors import GentextError
from gentext.inference.textmodel import TextModel

__version__ = "0.1.0"
__all__ = [
    "CorpusConfig",
    "GentextError",
    "ModelConfig",
    "SampleConfig",
    "TextModel",
    "TokenizerConfig",
    "TrainConfig",
    "load",
    "train",
]
