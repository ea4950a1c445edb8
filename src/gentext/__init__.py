"""gentext: train generative text networks on any text and sample from them.

Importing the package loads nothing heavy and changes nothing in the process: the names below are
imported when first used. The `gentext` command sets what it must before torch loads (__main__.py).
"""

import importlib

__version__ = "0.1.0"
_EXPORTS = {
    "CorpusConfig": "gentext.config",
    "GentextError": "gentext.errors",
    "ModelConfig": "gentext.config",
    "SampleConfig": "gentext.useconfig",
    "TextModel": "gentext.inference.textmodel",
    "TokenizerConfig": "gentext.config",
    "TrainConfig": "gentext.config",
    "load": "gentext.api",
    "set_threads": "gentext.threads",
    "train": "gentext.api",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'gentext' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = getattr(module, "configure" if name == "set_threads" else name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
