"""How every CLI command prints its `--json` result, and the version it reports."""

from __future__ import annotations

import json
import math
from typing import Any


def print_json(obj: dict[str, Any]) -> None:
    """One JSON object on one line; non-finite floats (a loss with no training step) become null."""

    def clean(value):
        return None if isinstance(value, float) and not math.isfinite(value) else value

    print(json.dumps({k: clean(v) for k, v in obj.items()}, ensure_ascii=False))


def version_text() -> str:
    """The installed distribution's version (the package's own where it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gentext")
    except PackageNotFoundError:
        import gentext

        return gentext.__version__
