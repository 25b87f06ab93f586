"""The event model: the six Segment-spec message types as pydantic v2 models.

Fields are snake_case in Python; dicts may use either snake_case or Segment's camelCase keys.
A naive ``timestamp`` is taken as UTC, and every timestamp is stored in UTC. ``message_id`` is
generated once, when the event is built, and is the idempotency key on every retry.

Validation is the whole contract: an event that can be built can be serialised by every plugin,
by the outbox and by any JSON encoder. What JSON cannot carry is refused here, with
``InvalidEventError`` naming the path (the rules are in ``router_core.jsonable``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, TypeAlias, TypeVar

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from router_core.errors import InvalidEventError
from router_core.jsonable import (
    UnsendableValue,
    check_int,
    check_text,
    plain_copy,
    printable,
    to_jsonable,
)

__all__ = [
    "AliasEvent",
    "Event",
    "EventType",
    "GroupEvent",
    "IdentifyEvent",
    "PageEvent",
    "ScreenEvent",
    "TrackEvent",
]

EventType: TypeAlias = Literal["track", "identify", "page", "screen", "group", "alias"]

MAX_MESSAGE_ID_LENGTH = 100  # Segment's limit; longer ids are rejected by the API

# Fields each type must carry beyond an identity (Segment spec).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "track": ("event",),
    "identify": (),
    "page": (),
    "screen": (),
    "group": ("group_id",),
    "alias": ("previous_id", "user_id"),
}


_TYPE_RULE = f"must be one of {', '.join(_REQUIRED)}"

_IDS_AT_ONCE = 256
_ready_ids: list[str] = []  # made from one os.urandom() call; list.pop() is atomic
# The variant nibble of an RFC 4122 UUID is 8, 9, a or b: the random nibble's low two bits.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


def _new_message_id() -> str:
    # What str(uuid.uuid4()) gives, from the same os.urandom, in a third of the time: the
    # random bytes of 256 ids come from one system call, and no UUID object is made. Every
    # event pays for this. A forked child starts with none (it must not repeat the parent's).
    try:
        return _ready_ids.pop()
    except IndexError:
        _make_ids()
        return _new_message_id()


def _make_ids() -> None:
    digits = os.urandom(16 * _IDS_AT_ONCE).hex()
    _ready_ids.extend(
        f"{d[:8]}-{d[8:12]}-4{d[13:16]}-{_VARIANT[d[16]]}{d[17:20]}-{d[20:]}"
        for d in (digits[i : i + 32] for i in range(0, len(digits), 32))
    )


os.register_at_fork(after_in_child=_ready_ids.clear)


def _an(event_type: str) -> str:
    """``"an identify"``, ``"a track"``: error messages read as sentences."""
    return f"{'an' if event_type[0] in 'aeiou' else 'a'} {event_type}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """One analytics event. Build it with ``Event.track(...)`` and friends, or ``Event.parse(d)``.

    The base class validates any type; the subclasses narrow ``type`` for static typing and make
    the type's required fields required.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=False,
        loc_by_alias=False,
    )

    type: EventType
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)
    traits: dict[str, Any] = Field(default_factory=dict)
    context: dict[str, Any] = Field(default_factory=dict)
    integrations: dict[str, Any] = Field(default_factory=dict)
    timestamp: datetime = Field(default_factory=_utc_now)
    message_id: str = Field(
        default_factory=_new_message_id, min_length=1, max_length=MAX_MESSAGE_ID_LENGTH
    )
    group_id: str | None = None
    previous_id: str | None = None
    name: str | None = None
    category: str | None = None

    _adapter: ClassVar[TypeAdapter[AnyEvent]]

    @field_validator("properties", "traits", "context", "integrations", mode="before")
    @classmethod
    def _jsonable(cls, value: Any, info: Any) -> Any:
        if value is None:
            return {}
        plain = plain_copy(value)  # the fast path: a flat dict of plain values
        if plain is not None:
            return plain
        if not isinstance(value, Mapping):
            return value  # pydantic reports the wrong type with the field name
        converted: dict[str, Any] = to_jsonable(value, info.field_name)
        return converted

    @field_validator("user_id", "anonymous_id", "group_id", "previous_id", mode="before")
    @classmethod
    def _ids_as_strings(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            return check_text(value, info.field_name)
        # Integer ids are common in apps; both vendors want strings.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(check_int(int.__int__(value), info.field_name))
        return value

    @field_validator("event", "message_id", "name", "category", mode="before")
    @classmethod
    def _valid_text(cls, value: Any, info: Any) -> Any:
        if isinstance(value, str):
            return check_text(value, info.field_name)
        return value

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        try:
            return value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:59-05:00 is in the year 10000 in UTC
            raise UnsendableValue(
                "timestamp", "falls outside the years 1 to 9999 once converted to UTC"
            ) from None

    @model_validator(mode="after")
    def _spec_rules(self) -> Event:
        if self.type != "alias" and not (self.user_id or self.anonymous_id):
            raise ValueError(f"{_an(self.type)} event needs user_id or anonymous_id")
        if type(self) is Event:  # the subclasses declare these as required fields
            missing = [f for f in _REQUIRED[self.type] if not getattr(self, f)]
            if missing:
                raise ValueError(f"{_an(self.type)} event needs {', '.join(missing)}")
        return self

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def parse(cls, data: Event | Mapping[str, Any]) -> Event:
        """Validate a dict (snake_case or camelCase keys) into the right event subclass."""
        if isinstance(data, Event):
            return data
        if not isinstance(data, Mapping):
            raise InvalidEventError(
                f"an event must be an Event or a mapping, not {type(data).__name__}"
            )
        tag = data.get("type")
        if tag is not None and not isinstance(tag, str):
            # pydantic would try to print any other object as a tag (a huge int cannot be).
            raise InvalidEventError(f"invalid event: type: {_TYPE_RULE}", [("type", _TYPE_RULE)])
        try:
            return Event._adapter.validate_python(data)
        except ValidationError as exc:
            raise _invalid(exc, tag, data) from None

    def stored_json(self) -> str:
        """The event as the outbox stores it: ``model_dump_json()``'s JSON (the same fields in
        the same order, timestamps in UTC with ``Z``), written by orjson in a quarter of the
        time. ``from_stored()`` reads it back."""
        return orjson.dumps(self.__dict__, option=orjson.OPT_UTC_Z).decode()

    @classmethod
    def from_stored(cls, payload: str | bytes) -> Event:
        """The event whose ``stored_json()`` (or ``model_dump_json()``) is ``payload``,
        without validating it again.

        For JSON this library wrote from a validated event (the outbox's rows, a spool's
        lines): building it anew costs about 1.5 µs instead of 7.5 for ``parse()``, which
        matters when a worker drains a backlog. Anything that does not have exactly the
        fields an event dumps (JSON from another version, say) goes through ``parse()``, so
        nothing unvalidated gets in; invalid JSON raises ``ValueError``.
        """
        data = orjson.loads(payload)
        kind = data.get("type") if isinstance(data, dict) else None
        model = _MODELS.get(kind) if type(kind) is str else None
        stamp = data.get("timestamp") if model is not None else None
        if model is None or data.keys() != _FIELDS or not isinstance(stamp, str):
            return cls.parse(data)
        try:
            data["timestamp"] = datetime.fromisoformat(stamp)
        except ValueError:
            return cls.parse(data)
        # What BaseModel.model_construct() does, without its per-field loop: every field
        # is given, none is extra, and the model has no private attributes.
        event = model.__new__(model)
        _set_attribute(event, "__dict__", data)
        _set_attribute(event, "__pydantic_fields_set__", set(_FIELDS))
        _set_attribute(event, "__pydantic_extra__", None)
        _set_attribute(event, "__pydantic_private__", None)
        return event

    @classmethod
    def track(cls, event: str, **fields: Any) -> TrackEvent:
        """A track event: ``Event.track("Order Completed", user_id="u1", properties={...})``."""
        return _build(TrackEvent, {"type": "track", **fields, "event": event})

    @classmethod
    def identify(cls, **fields: Any) -> IdentifyEvent:
        """An identify event: ``Event.identify(user_id="u1", traits={"email": ...})``."""
        return _build(IdentifyEvent, {"type": "identify", **fields})

    @classmethod
    def page(cls, name: str | None = None, **fields: Any) -> PageEvent:
        """A page view: ``Event.page("Pricing", user_id="u1", properties={"url": ...})``."""
        return _build(PageEvent, {"type": "page", **fields, "name": name})

    @classmethod
    def screen(cls, name: str | None = None, **fields: Any) -> ScreenEvent:
        """A mobile screen view."""
        return _build(ScreenEvent, {"type": "screen", **fields, "name": name})

    @classmethod
    def group(cls, group_id: str, **fields: Any) -> GroupEvent:
        """Associate a user with a group (company, team, ...)."""
        return _build(GroupEvent, {"type": "group", **fields, "group_id": group_id})

    @classmethod
    def alias(cls, previous_id: str, user_id: str, **fields: Any) -> AliasEvent:
        """Merge ``previous_id`` into ``user_id``."""
        data = {"type": "alias", **fields, "previous_id": previous_id, "user_id": user_id}
        return _build(AliasEvent, data)

    # -- helpers for plugins ------------------------------------------------------------------

    @property
    def distinct_id(self) -> str:
        """The identity vendors key on: ``user_id`` when set, else ``anonymous_id``."""
        return self.user_id or self.anonymous_id or ""

    @property
    def label(self) -> str:
        """What filters match: the event name for track, otherwise the type."""
        return self.event if self.type == "track" and self.event else self.type


class TrackEvent(Event):
    """A user did something: ``event`` names it (``"Order Completed"``)."""

    type: Literal["track"] = "track"
    event: str = Field(min_length=1)


class IdentifyEvent(Event):
    """Who a user is: ``traits`` about them (email, plan, ...)."""

    type: Literal["identify"] = "identify"


class PageEvent(Event):
    """A web page view: ``name``, ``category`` and ``properties`` (url, path, referrer)."""

    type: Literal["page"] = "page"


class ScreenEvent(Event):
    """A mobile app screen view: ``name`` and ``properties``."""

    type: Literal["screen"] = "screen"


class GroupEvent(Event):
    """A user belongs to a group (company, team): ``group_id`` and its ``traits``."""

    type: Literal["group"] = "group"
    group_id: str = Field(min_length=1)


class AliasEvent(Event):
    """One identity merged into another: ``previous_id`` becomes ``user_id``."""

    type: Literal["alias"] = "alias"
    previous_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)


AnyEvent: TypeAlias = Annotated[
    TrackEvent | IdentifyEvent | PageEvent | ScreenEvent | GroupEvent | AliasEvent,
    Field(discriminator="type"),
]
Event._adapter = TypeAdapter(AnyEvent)

_MODELS: dict[object, type[Event]] = {
    model.model_fields["type"].default: model
    for model in (TrackEvent, IdentifyEvent, PageEvent, ScreenEvent, GroupEvent, AliasEvent)
}
_FIELDS = frozenset(Event.model_fields)
_set_attribute = object.__setattr__


_E = TypeVar("_E", bound=Event)


def _build(model: type[_E], data: dict[str, Any]) -> _E:
    # A dict, not keywords: a stray ``type=`` in ``fields`` is then a validation error.
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(exc, model.model_fields["type"].default, data) from None


def _invalid(
    exc: ValidationError, event_type: object, data: Mapping[Any, Any]
) -> InvalidEventError:
    problems: list[tuple[str, str]] = []
    # Any object can arrive as "type" (a list, a dict): compare only strings.
    known_type = isinstance(event_type, str) and event_type in _REQUIRED
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        if known_type and loc and loc[0] == event_type:
            loc = loc[1:]  # drop the discriminator tag pydantic puts first
        path = ".".join(loc)
        message = error["msg"].removeprefix("Value error, ")
        cause = error.get("ctx", {}).get("error")
        if isinstance(cause, UnsendableValue):  # to_jsonable and friends know the full path
            path, message = cause.path, cause.reason
        elif error["type"] == "union_tag_invalid":
            path, message = "type", _TYPE_RULE
        elif error["type"] == "union_tag_not_found":
            path, message = "type", "is required"
        elif not path and error["type"] == "string_unicode":
            path, message = _bad_key(data)  # a top-level key pydantic cannot read
        problems.append((printable(path), printable(message)))
    kind = f"{event_type} event" if known_type else "event"
    detail = "; ".join(f"{path}: {msg}" if path else msg for path, msg in problems)
    return InvalidEventError(f"invalid {kind}: {detail}", problems)


def _bad_key(data: Mapping[Any, Any]) -> tuple[str, str]:
    for key in data:
        if isinstance(key, str):
            try:
                check_text(key, "")
            except UnsendableValue as exc:
                return "", f"field name {printable(repr(key))}: {exc.reason}"
    return "", "a field name is not valid Unicode"
