"""What a request may ask, checked at the edge: schemas derived from SampleConfig (same names, same
rules, the CLI's messages in the 422), the server's own caps, conditions and pictures.

Every refusal is a 4xx naming the field, before any work is queued: a request that gets past this
module can only fail in the model itself, and that ends that request alone (inference/engine.py).
"""

import dataclasses
import typing
from typing import Any, Literal

from gentext.errors import GentextError
from gentext.inference.textmodel import TextModel
from gentext.useconfig import SampleConfig, ServerLimits

MAX_BODY_BYTES = 12_000_000  # the largest request body (413 beyond): a picture of MAX_IMAGE_BYTES in base64 fits
MAX_IMAGE_BYTES = 8_000_000
MAX_IMAGE_PIXELS = 4096 * 4096  # checked from the header, before the picture is decoded
MAX_LABEL_CHARS = 200


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def sample_request_fields(limits: ServerLimits | None = None) -> dict[str, Any]:
    """The request's sampling fields, derived from SampleConfig: same names, same defaults (the
    token budget capped by the server's limit); the ranges are checked by SampleConfig.validate,
    so the server and the CLI refuse alike."""
    hints = typing.get_type_hints(SampleConfig)
    fields = {}
    for f in dataclasses.fields(SampleConfig):
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        fields[f.name] = (hints[f.name], default)
    if limits is not None:
        fields["max_new_tokens"] = (int, min(SampleConfig.max_new_tokens, limits.max_new_tokens))
    return fields


# the sampling fields every request is read for, named once: `sample_request_fields` also resolves
# their types (typing.get_type_hints reads the annotations anew on each call, a noticeable share of a
# busy server's interpreter when it ran per request)
_SAMPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(SampleConfig))


def unprocessable(field: str, message: str):
    from fastapi import HTTPException

    return HTTPException(422, detail=[{"loc": ["body", field], "msg": message}])


def sample_settings(request, limits: ServerLimits) -> dict[str, Any]:
    """The request's SampleConfig fields, validated by the CLI's rules plus the server's limits."""
    settings = request.model_dump(include=_SAMPLE_FIELDS)
    return checked_settings(settings, limits)


def checked_settings(settings: dict[str, Any], limits: ServerLimits) -> dict[str, Any]:
    caps = (
        ("max_new_tokens", limits.max_new_tokens),
        ("num_samples", limits.max_num_samples),
        ("num_beams", limits.max_num_beams),
    )
    for name, cap in caps:
        if settings[name] > cap:
            raise unprocessable(name, f"{flag(name)} must be <= {cap} on this server, got {settings[name]}")
    try:
        SampleConfig(**settings).validate()
    except GentextError as exc:
        field = next((n for n in settings if flag(n) in str(exc)), "body")
        raise unprocessable(field, str(exc)) from None
    timeout = limits.request_timeout
    settings["max_time"] = timeout if settings["max_time"] is None else min(settings["max_time"], timeout)
    return settings


def lone_surrogate(value: Any, path: str = "body") -> str | None:
    """Where a JSON value holds a lone UTF-16 surrogate (JSON's "\\ud800" escapes decode to one,
    and no text can be encoded with it), or None."""
    if isinstance(value, str):
        return path if any(0xD800 <= ord(c) <= 0xDFFF for c in value) else None
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next((found for key, item in items if (found := lone_surrogate(item, f"{path}.{key}"))), None)


def strict_base():
    """The base of every request schema: unknown fields refused (a misspelled field is a 422 naming
    it, never ignored) and text that is not valid Unicode refused, naming where it is."""
    from pydantic import BaseModel, ConfigDict, model_validator

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")

        @model_validator(mode="before")
        @classmethod
        def _unicode(cls, data: Any) -> Any:
            where = lone_surrogate(data)
            if where is not None:
                raise ValueError(f"{where} holds a lone UTF-16 surrogate (not valid Unicode text)")
            return data

    return Strict


def free_text(max_length: int):
    """A string field of at most `max_length` characters."""
    from typing import Annotated

    from pydantic import Field

    return Annotated[str, Field(max_length=max_length)]


def request_models(limits: ServerLimits):
    """The request schemas: generation from SampleConfig's fields, scoring, captions, attention."""
    from pydantic import Field, create_model

    strict = strict_base()
    prompt_field = Field("", max_length=limits.max_prompt_chars)
    generate = create_model(
        "GenerateRequest",
        __base__=strict,
        prompt=(str, prompt_field),
        label=(str | None, Field(None, max_length=MAX_LABEL_CHARS)),  # a labelled run's label (--condition label)
        source=(str | None, Field(None, max_length=limits.max_prompt_chars)),  # a seq2seq run's source
        model=(str | None, None),
        stream=(bool, False),
        **sample_request_fields(limits),
    )

    class ScoreRequest(strict):
        text: str = Field(..., min_length=1, max_length=limits.max_prompt_chars * 4)
        label: str | None = Field(None, max_length=MAX_LABEL_CHARS)
        model: str | None = None
        unknown: Literal["error", "skip"] = "error"  # as --unknown: characters the model never saw

    caption = create_model(
        "CaptionRequest",
        __base__=strict,
        image=(str, Field(..., min_length=1, max_length=MAX_IMAGE_BYTES * 4 // 3 + 64)),  # base64 or a data: URL
        model=(str | None, None),
        **sample_request_fields(limits),
    )
    attention = create_model(
        "AttentionRequest",
        __base__=strict,
        source=(str, Field(..., min_length=1, max_length=limits.max_prompt_chars)),
        model=(str | None, None),
    )
    return generate, ScoreRequest, caption, attention


def conditions(model: TextModel, request) -> dict[str, str]:
    """The request's label and source, checked with its prompt: unknown characters, an unknown or
    missing label, a missing source are a 400 naming the problem."""
    from fastapi import HTTPException

    given = {n: getattr(request, n, None) for n in ("label", "source")}
    found = {name: value for name, value in given.items() if value is not None}
    try:
        model.check_prompt(getattr(request, "prompt", ""), **found)
    except GentextError as exc:
        raise HTTPException(400, detail=str(exc)) from None
    return found


def picture(data: str):
    """A request's base64 picture (optionally a data: URL) as a decoded PIL image. Size in bytes
    and in pixels (from the header) are checked before decoding; anything else unreadable is a
    400. Runs on a worker thread: decoding is CPU work the event loop must not do."""
    import base64
    import binascii
    import io
    import warnings

    from fastapi import HTTPException
    from PIL import Image, UnidentifiedImageError

    payload = data.split(",", 1)[1] if data.startswith("data:") else data
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, detail="image: not base64 (send base64 or a data: URL)") from None
    if len(raw) > MAX_IMAGE_BYTES:
        raise HTTPException(413, detail=f"image: {len(raw):,} bytes; at most {MAX_IMAGE_BYTES:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise HTTPException(413, detail=f"image: {width}x{height} pixels; at most {MAX_IMAGE_PIXELS:,}")
            image.load()
    except (ValueError, UnidentifiedImageError, OSError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise HTTPException(400, detail="image: not a readable PNG or JPEG (send base64 or a data: URL)") from None
    return image
