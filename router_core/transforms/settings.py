"""The settings of each built-in transform, validated like every other setting.

A destination's ``transforms`` is a list of tables, each with a ``type`` naming the
transform; ``parse_transforms`` validates the list and reports every problem as
``destinations.NAME.transforms[I].FIELD: message`` (indexes from 0), never echoing a value.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Annotated, Any, Literal, TypeAlias

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from router_core.errors import ConfigError
from router_core.events import EventType
from router_core.secrets import register_secret
from router_core.settings.problems import validation_problems
from router_core.transforms.paths import PathPattern

__all__ = [
    "DEFAULT_URL_PATHS",
    "ID_FIELDS",
    "MIN_KEY_LENGTH",
    "TRANSFORM_TYPES",
    "AllowSettings",
    "DropEventsSettings",
    "DropSettings",
    "PluginTransformSettings",
    "PseudonymizeSettings",
    "RenameSettings",
    "SampleSettings",
    "ScrubIpSettings",
    "StripQuerySettings",
    "TransformSettings",
    "parse_transforms",
]

ID_FIELDS = ("user_id", "anonymous_id", "previous_id", "group_id")
"""The identity fields of an event: what ``pseudonymize`` hashes by default."""

# The free-form objects of an event. Paths that drop or keep values must start with one of
# these: dropping ``user_id`` or ``type`` would make the event invalid for every event.
_OBJECTS = ("properties", "traits", "context", "integrations")
_TEXT_ROOTS = ("properties", "traits", "context")

DEFAULT_URL_PATHS = (
    "context.page.url",
    "context.page.referrer",
    "context.page.search",
    "properties.url",
    "properties.referrer",
    "properties.search",
)
"""Where Segment's page spec keeps URLs and query strings: what ``strip_query`` cleans."""

MIN_KEY_LENGTH = 16  # a pseudonymisation key short enough to guess protects nothing


def _path(roots: Collection[str], whole: Collection[str] = ()) -> Callable[[str], str]:
    """A validator: a glob path starting with one of ``roots``; those in ``whole`` alone."""

    def check(text: str) -> str:
        pattern = PathPattern.parse(text, roots)
        if pattern.root in whole and len(pattern.segments) > 1:
            raise ValueError(f"{pattern.root} is a string: a path cannot go below it")
        return text

    return check


def _not_empty(value: tuple[str, ...]) -> tuple[str, ...]:
    # An after-validator, so an empty list is reported only when no path was at fault.
    if not value:
        raise ValueError("name at least one path")
    return value


ObjectPaths = Annotated[
    tuple[Annotated[str, AfterValidator(_path(_OBJECTS))], ...], AfterValidator(_not_empty)
]
TextPaths = Annotated[
    tuple[Annotated[str, AfterValidator(_path(_TEXT_ROOTS))], ...], AfterValidator(_not_empty)
]
IdPaths = Annotated[
    tuple[Annotated[str, AfterValidator(_path((*ID_FIELDS, *_TEXT_ROOTS), ID_FIELDS))], ...],
    AfterValidator(_not_empty),
]


class _Transform(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PseudonymizeSettings(_Transform):
    """``pseudonymize``: replace ids (and named trait or property values) by keyed hashes.

    The output is ``h1:<key_id>:<hex HMAC-SHA256 of the value>``; see
    ``router_core.transforms.pseudonymize`` for why.
    """

    type: Literal["pseudonymize"]
    key: SecretStr
    key_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,32}$")
    fields: IdPaths = ID_FIELDS

    @field_validator("key")
    @classmethod
    def _long_enough(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(
                f"must be at least {MIN_KEY_LENGTH} characters of random secret "
                "(for example the output of `openssl rand -hex 32`)"
            )
        return value

    @model_validator(mode="after")
    def _register(self) -> PseudonymizeSettings:
        register_secret(self.key.get_secret_value())  # masked in every error and log from now
        return self


class DropSettings(_Transform):
    """``drop``: remove every value at the given glob paths."""

    type: Literal["drop"]
    paths: ObjectPaths


class AllowSettings(_Transform):
    """``allow``: keep only the given glob paths inside the objects they name."""

    type: Literal["allow"]
    paths: ObjectPaths


class ScrubIpSettings(_Transform):
    """``scrub_ip``: remove IP addresses, or truncate them (IPv4 to /24, IPv6 to /48)."""

    type: Literal["scrub_ip"]
    mode: Literal["remove", "truncate"] = "remove"
    paths: TextPaths = ("context.ip",)


class StripQuerySettings(_Transform):
    """``strip_query``: remove query strings from URLs, or only the named parameters."""

    type: Literal["strip_query"]
    params: tuple[Annotated[str, Field(min_length=1)], ...] | None = None
    paths: TextPaths = DEFAULT_URL_PATHS

    @field_validator("params")
    @classmethod
    def _some(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not value:
            raise ValueError("name at least one parameter, or leave params out to strip all")
        return value


class DropEventsSettings(_Transform):
    """``drop_events``: drop track events whose name matches, and events of the given types."""

    type: Literal["drop_events"]
    events: tuple[Annotated[str, Field(min_length=1)], ...] = ()
    types: tuple[EventType, ...] = ()

    @field_validator("events", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _something(self) -> DropEventsSettings:
        if not self.events and not self.types:
            raise ValueError("give events (name patterns) or types, or both")
        return self


class RenameSettings(_Transform):
    """``rename``: give track events new names, ``{"Order Completed" = "purchase"}``."""

    type: Literal["rename"]
    events: dict[str, Annotated[str, Field(min_length=1)]] = Field(min_length=1)


class SampleSettings(_Transform):
    """``sample``: keep a deterministic ``rate`` of users; a user is all in or all out."""

    type: Literal["sample"]
    rate: float = Field(ge=0, le=1)
    salt: str = ""


class PluginTransformSettings(_Transform):
    """``plugin``: the ``transform_event`` hook of the plugin called ``name``."""

    type: Literal["plugin"]
    name: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)


_AnyTransform: TypeAlias = (
    PseudonymizeSettings
    | DropSettings
    | AllowSettings
    | ScrubIpSettings
    | StripQuerySettings
    | DropEventsSettings
    | RenameSettings
    | SampleSettings
    | PluginTransformSettings
)

TransformSettings: TypeAlias = Annotated[_AnyTransform, Field(discriminator="type")]
"""Any one transform's settings, told apart by ``type``."""

_MODELS: dict[str, type[_AnyTransform]] = {
    "pseudonymize": PseudonymizeSettings,
    "drop": DropSettings,
    "allow": AllowSettings,
    "scrub_ip": ScrubIpSettings,
    "strip_query": StripQuerySettings,
    "drop_events": DropEventsSettings,
    "rename": RenameSettings,
    "sample": SampleSettings,
    "plugin": PluginTransformSettings,
}

TRANSFORM_TYPES = tuple(_MODELS)
"""Every ``type`` a transform table may name."""


def parse_transforms(value: object, where: str = "transforms") -> tuple[TransformSettings, ...]:
    """Validate a destination's ``transforms`` list (an array of TOML tables).

    Raises ``ConfigError`` listing every problem, each prefixed ``<where>[<index>]``.
    Already validated settings pass through unchanged.
    """
    if value is None:
        return ()
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple):
        raise ConfigError([f"{where}: must be an array of tables ([[...transforms]])"])
    problems: list[str] = []
    parsed: list[TransformSettings] = []
    for index, item in enumerate(value):
        at = f"{where}[{index}]"
        if isinstance(item, _AnyTransform):
            parsed.append(item)
            continue
        if not isinstance(item, Mapping):
            problems.append(f"{at}: must be a table")
            continue
        kind = item.get("type")
        if kind is None:
            problems.append(f"{at}.type: required; one of {', '.join(TRANSFORM_TYPES)}")
            continue
        model = _MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            problems.append(f"{at}.type: must be one of {', '.join(TRANSFORM_TYPES)}")
            continue
        try:
            parsed.append(model.model_validate(dict(item)))
        except ValidationError as exc:
            problems.extend(validation_problems(exc, at))
    if problems:
        raise ConfigError(problems)
    return tuple(parsed)
