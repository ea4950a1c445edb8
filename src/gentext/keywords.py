"""Settings given as Python keywords (`gentext.train(steps=500)`, `model.generate(temperature=0.8)`),
checked against the config field that defines them before anything runs.

Why: a keyword of the wrong type reached the arithmetic ("'>' not supported between instances of
'str' and 'int'", or torch's own complaint about a width of 64.5) instead of a line that names the
setting. Text is taken as the field's flag takes it where the field has a parser and is not text
itself (`time_limit="10m"`, `adaptive_cutoffs="2000,6000"`), so the API accepts what the CLI accepts;
a text field keeps its text (`json_schema="@FILE"` is the CLI's alone: a served request must never
name a file on the server to read). Any other value must be of
the field's type (an int is a number, a bool is not; one string is a list of one where a list of
strings is wanted, as OpenAI's `stop` takes it). A misspelt keyword is refused with the
nearest setting's name. Ranges stay with each config's `validate`, which the CLI shares.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from typing import Any

from gentext.errors import GentextError

_WHAT = {int: "an integer", float: "a number", str: "a string", bool: "True or False"}
_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "True or False values"}


def unknown_setting(name: str, known, what: str) -> GentextError:
    """The error for a keyword no config defines, naming the closest one that does."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return GentextError(f"{what} got an unknown setting {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))


def typed(cls: type, values: dict[str, Any], what: str) -> dict[str, Any]:
    """`values` (keyword -> value) for the config dataclass `cls`, each parsed or checked (see the
    module docstring); raises GentextError naming the first setting that does not fit."""
    fields, hints = _fields(cls)
    checked = {}
    for name, value in values.items():
        if name not in fields:
            raise unknown_setting(name, fields, what)
        parse = fields[name].metadata.get("parse")
        if isinstance(value, str) and parse is not None and not _fits(hints[name], value):
            try:
                value = parse(value)
            except (ValueError, KeyError) as exc:
                raise GentextError(f"{name}: {exc}") from None
        elif isinstance(value, str) and _fits(hints[name], [value]):
            value = [value]  # one stop string where a list of them is wanted: a list of one
        elif _fits(hints[name], value) is False:
            raise GentextError(f"{name} must be {_describe(hints[name])}, got {value!r}")
        checked[name] = value
    return checked


@functools.cache
def _fields(cls: type) -> tuple[dict, dict]:
    """A config's fields and their evaluated type hints, once per class: resolving the hints is
    far slower than checking the values, and every generation request passes through here."""
    return {f.name: f for f in dataclasses.fields(cls) if f.init}, typing.get_type_hints(cls)


def _parts(hint) -> tuple[list, bool]:
    """The types a hint allows besides None, and whether it allows None."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = typing.get_args(hint)
        return [a for a in args if a is not type(None)], type(None) in args
    return [hint], False


def _fits(hint, value) -> bool | None:
    """Whether `value` is of `hint`'s type; None where the hint is not one this module checks."""
    allowed, optional = _parts(hint)
    if value is None:
        return optional
    verdicts = [_fits_one(one, value) for one in allowed]
    return True if True in verdicts else (None if None in verdicts else False)


def _fits_one(hint, value) -> bool | None:
    if typing.get_origin(hint) is list:
        inner = (typing.get_args(hint) or (None,))[0]
        if not isinstance(value, list | tuple):
            return False
        verdicts = [_fits_one(inner, item) for item in value]
        return False if False in verdicts else (None if None in verdicts else True)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint in (str, bool):
        return isinstance(value, hint)
    return None


def _describe(hint) -> str:
    allowed, optional = _parts(hint)
    words = []
    for one in allowed:
        if typing.get_origin(one) is list:
            inner = (typing.get_args(one) or (None,))[0]
            words.append(f"a list of {_PLURAL.get(inner, 'values')}")
        else:
            words.append(_WHAT.get(one, getattr(one, "__name__", str(one))))
    return " or ".join(words + (["None"] if optional else []))
