"""Command-line flags derived from the config dataclasses (`config.opt` fields): one definition of
each option, so flags, presets, chat's /settings and the server's schema cannot drift apart.

Flags are added with `default=SUPPRESS`: the namespace then holds exactly the flags the user typed,
which is what presets (fill in the rest) and `--resume` (refuse changes, naming the flag) need.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from gentext.errors import GentextError
from gentext.fields import flag_of


def _options(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("help")]


def _base(hint: Any) -> Any:
    """int | None -> int; list[int] -> list[int] (left as is)."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        return inner[0]
    return hint


def _parser(cls: type, field: dataclasses.Field):
    """text -> value for one option, raising ValueError with a message that says what is wanted."""
    parse = field.metadata.get("parse")
    if parse is not None:
        return parse
    base = _base(typing.get_type_hints(cls)[field.name])
    if typing.get_origin(base) is list:
        base = typing.get_args(base)[0]
    if base is bool:
        return lambda text: {"true": True, "1": True, "on": True, "false": False, "0": False, "off": False}[
            text.strip().lower()
        ]

    def convert(text: str):
        try:
            return base(text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if base is int else 'a number'}, got {text!r}") from None

    return convert


def _argparse_type(parse):
    def convert(text: str):
        try:
            return parse(text)
        except (ValueError, KeyError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_options(
    parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (), defaults: dict[str, Any] | None = None
) -> None:
    """One flag per option field of `cls` (help shows the dataclass default, or the command's own
    from `defaults`, which the command must then apply itself)."""
    hints = typing.get_type_hints(cls)
    for field in _options(cls):
        if field.name in skip:
            continue
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        default = (defaults or {}).get(field.name, default)
        help_text = (
            f"{field.metadata['help']} [{default}]" if default not in (None, [], False) else field.metadata["help"]
        )
        help_text = help_text.replace("%", "%%")  # argparse %-formats help: "97.4%" would break --help
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS, "help": help_text}
        base = _base(hints[field.name])
        if base is bool:
            kwargs["action"] = "store_true"
        elif typing.get_origin(base) is list and field.metadata.get("parse") is None:
            kwargs.update(action="append", type=_argparse_type(_parser(cls, field)))
            kwargs["metavar"] = "TEXT"
        else:
            kwargs["type"] = _argparse_type(_parser(cls, field))
        if base is not bool and "metavar" not in kwargs:
            kwargs["metavar"] = flag_of(cls, field.name).lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag_of(cls, field.name), **kwargs)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of `cls` that were typed on the command line."""
    return {f.name: getattr(args, f.name) for f in _options(cls) if hasattr(args, f.name)}


def convert(cls: type, name: str, text: str) -> Any:
    """An option's value from text, as its flag would parse it (for chat's /settings)."""
    field = next((f for f in _options(cls) if f.name == name), None)
    if field is None:
        raise GentextError(f"unknown setting {name!r}")
    try:
        value = _parser(cls, field)(text)
    except (ValueError, KeyError) as exc:
        raise GentextError(f"{flag_of(cls, name)}: {exc}") from None
    return value


def load_run(args: argparse.Namespace, run: str, **defaults: Any):
    """A run loaded as the LoadConfig flags typed say (--device, --weights), else `defaults`, else
    LoadConfig's defaults."""
    from gentext import api
    from gentext.useconfig import LoadConfig

    try:
        return api.load(run, **{**defaults, **given(args, LoadConfig)})
    except GentextError as exc:
        if str(run) in str(exc):
            raise
        raise GentextError(f"{run}: {exc}") from None  # with several runs, say which one
