"""gentext: train generative recurrent text networks on any text and sample from them."""

from .api import load, train
from .config import CorpusConfig, ModelConfig, SampleConfig, TokenizerConfig, TrainConfig
from .errors import GentextError
from .textmodel import TextModel

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
