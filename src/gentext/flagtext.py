"""Parsers that turn an option's text on the command line into its value (config.py's `parse=`)."""

from __future__ import annotations

import re


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"invalid duration {text!r} (use e.g. 300, 90s, 10m, 1h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_cutoffs(text: str) -> list[int]:
    """'2000,6000' -> [2000, 6000]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ValueError(f"invalid cutoffs {text!r} (use e.g. 2000,6000)") from None
