"""How an option is declared and checked, and how a config dataclass goes to and from JSON: the
pieces every config module (config.py, useconfig.py) builds its fields and `validate()` from."""

from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Any

from gentext.errors import GentextError


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None, parse=None, factory=None):
    """A config field that is also an option: `help` becomes the flag's help, `flag` its name
    (default --field-name), `parse` turns the flag's text into the value (default: the field's type)."""
    metadata = {"help": help, "flag": flag, "parse": parse}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def flag_of(cls: type, name: str) -> str:
    """The command-line flag of an option field."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.metadata.get("flag") or "--" + name.replace("_", "-")


def check(condition: bool, message: str) -> None:
    if not condition:
        raise GentextError(message)


def one_of(value: Any, choices: tuple, flag: str) -> None:
    check(value in choices, f"{flag} must be one of {', '.join(map(str, choices))}, got {value!r}")


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def from_dict(cls: type, data: dict[str, Any], what: str) -> Any:
    """Build a config dataclass from JSON, refusing unknown keys with a clear message."""
    if not isinstance(data, dict):
        raise GentextError(f"{what}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise GentextError(f"{what}: unknown keys {unknown} (written by a newer gentext?)")
    try:
        return cls(**{**getattr(cls, "SAVED_BEFORE", {}), **data})  # a key added later: what its absence meant
    except TypeError as exc:
        raise GentextError(f"{what}: {exc}") from None
