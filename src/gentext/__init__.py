"""gentext: train generative recurrent text networks on any text and sample from them."""

# threads first: importing it sets OpenMP's idle waiting before anything loads torch (threads.prepare)
from gentext import threads  # noqa: F401  isort: skip
from gentext.api import load, train
from gentext.config import CorpusConfig, ModelConfig, TokenizerConfig, TrainConfig
from gentext.errors import GentextError
from gentext.inference.textmodel import TextModel
from gentext.threads import configure as set_threads
from gentext.useconfig import SampleConfig

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
    "set_threads",
    "train",
]
