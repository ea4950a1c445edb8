"""Where gentext keeps files outside a run directory: downloads, the token cache, compiled kernels."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$GENTEXT_CACHE, else ~/.cache/gentext."""
    return Path(os.environ.get("GENTEXT_CACHE") or Path.home() / ".cache" / "gentext")
