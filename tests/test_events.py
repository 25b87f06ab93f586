"""The event model: the six Segment-spec types, validation errors, JSON-safe properties."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from router_core import (
    AliasEvent,
    Event,
    GroupEvent,
    IdentifyEvent,
    InvalidEventError,
    PageEvent,
    ScreenEvent,
    TrackEvent,
)


class Plan(enum.Enum):
    PRO = "pro"


@pytest.mark.parametrize(
    ("event", "model"),
    [
        (Event.track("Order Completed", user_id="u1"), TrackEvent),
        (Event.identify(user_id="u1", traits={"email": "a@example.com"}), IdentifyEvent),
        (Event.page("Pricing", anonymous_id="anon-1"), PageEvent),
        (Event.screen("Home", user_id="u1"), ScreenEvent),
        (Event.group("acme", user_id="u1"), GroupEvent),
        (Event.alias("anon-1", "u1"), AliasEvent),
    ],
)
def test_constructors_build_the_right_type(event: Event, model: type[Event]) -> None:
    assert type(event) is model
    assert Event.parse(event.model_dump()) == event


def test_parse_accepts_camel_case_and_snake_case_keys() -> None:
    camel = Event.parse({"type": "group", "userId": "u1", "groupId": "g1", "messageId": "m-1"})
    snake = Event.parse({"type": "group", "user_id": "u1", "group_id": "g1", "message_id": "m-1"})
    assert isinstance(camel, GroupEvent)
    assert camel.group_id == snake.group_id == "g1"
    assert camel.message_id == "m-1"


def test_message_id_is_generated_once_and_kept() -> None:
    event = Event.track("Signed Up", user_id="u1")
    assert uuid.UUID(event.message_id).version == 4
    assert Event.parse(event.model_dump()).message_id == event.message_id
    assert Event.track("Signed Up", user_id="u1").message_id != event.message_id


def test_naive_timestamp_is_utc_and_aware_timestamps_are_converted() -> None:
    naive = Event.track("X", user_id="u", timestamp=datetime(2024, 5, 1, 12, 0))
    assert naive.timestamp == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    paris = timezone(timedelta(hours=2))
    aware = Event.track("X", user_id="u", timestamp=datetime(2024, 5, 1, 14, 0, tzinfo=paris))
    assert aware.timestamp == naive.timestamp
    assert aware.timestamp.utcoffset() == timedelta(0)
    parsed = Event.parse(
        {"type": "track", "event": "X", "user_id": "u", "timestamp": "2024-05-01T12:00:00Z"}
    )
    assert parsed.timestamp == naive.timestamp


def test_default_timestamp_is_now_in_utc() -> None:
    before = datetime.now(UTC)
    event = Event.identify(user_id="u")
    assert before <= event.timestamp <= datetime.now(UTC)
    assert event.timestamp.tzinfo is not None


def test_integer_ids_become_strings() -> None:
    assert Event.track("X", user_id=42).user_id == "42"


@pytest.mark.parametrize(
    ("data", "field", "fragment"),
    [
        ({"type": "track", "user_id": "u"}, "event", "Field required"),
        ({"type": "track", "event": "", "user_id": "u"}, "event", "at least 1 character"),
        ({"type": "track", "event": "X"}, "", "needs user_id or anonymous_id"),
        ({"type": "group", "user_id": "u"}, "group_id", "Field required"),
        ({"type": "alias", "user_id": "u"}, "previous_id", "Field required"),
        ({"type": "alias", "previous_id": "p"}, "user_id", "Field required"),
        ({"type": "nope", "user_id": "u"}, "type", "must be one of"),
        ({"user_id": "u"}, "type", "is required"),
        ({"type": "track", "event": "X", "user_id": "u", "colour": 1}, "colour", "Extra inputs"),
        ({"type": "track", "event": "X", "user_id": "u", "timestamp": "soon"}, "timestamp", ""),
        (
            {"type": "track", "event": "X", "user_id": "u", "message_id": "m" * 101},
            "message_id",
            "",
        ),
        ({"type": "track", "event": "X", "user_id": "u", "properties": [1]}, "properties", ""),
    ],
)
def test_invalid_events_name_the_field(data: dict[str, Any], field: str, fragment: str) -> None:
    with pytest.raises(InvalidEventError) as caught:
        Event.parse(data)
    paths = [path for path, _ in caught.value.problems]
    assert field in paths
    assert fragment in str(caught.value)
    if field:
        assert f"{field}:" in str(caught.value)


def test_parse_refuses_non_mappings() -> None:
    with pytest.raises(InvalidEventError, match="must be an Event or a mapping, not list"):
        Event.parse([("type", "track")])  # type: ignore[arg-type]


def test_property_values_are_converted_to_json_types() -> None:
    event_id = uuid.uuid4()
    event = Event.track(
        "Order Completed",
        user_id="u1",
        properties={
            "at": datetime(2024, 1, 2, 3, 4, 5),
            "day": date(2024, 1, 2),
            "total": Decimal("99.99"),
            "id": event_id,
            "plan": Plan.PRO,
            "tags": {"b", "a"},
            "pair": (1, 2),
            "nested": {"deeper": [Decimal("1.5"), {3: Plan.PRO}]},
        },
    )
    assert event.properties == {
        "at": "2024-01-02T03:04:05+00:00",
        "day": "2024-01-02",
        "total": 99.99,
        "id": str(event_id),
        "plan": "pro",
        "tags": ["a", "b"],
        "pair": [1, 2],
        "nested": {"deeper": [1.5, {"3": "pro"}]},
    }


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (object(), "properties.bad: value of type object cannot be sent as JSON"),
        (float("nan"), "properties.bad: nan is not a finite number"),
        (Decimal("Infinity"), "properties.bad: Decimal('Infinity') is not a finite number"),
        (b"raw", "properties.bad: value of type bytes cannot be sent as JSON"),
        ({"ok": [1, {"deep": float("inf")}]}, "properties.bad.ok[1].deep: inf is not a finite"),
        ({(1, 2): "tuple key"}, "properties.bad: key (1, 2) must be a string"),
    ],
)
def test_values_json_cannot_carry_are_refused_with_their_path(value: Any, message: str) -> None:
    with pytest.raises(InvalidEventError, match="invalid track event") as caught:
        Event.track("X", user_id="u", properties={"bad": value})
    assert message in str(caught.value)


def test_traits_and_context_are_converted_too() -> None:
    event = Event.identify(
        user_id="u", traits={"since": date(2020, 1, 1)}, context={"ip": Decimal("1")}
    )
    assert event.traits == {"since": "2020-01-01"}
    assert event.context == {"ip": 1.0}


def test_events_are_immutable() -> None:
    event = Event.track("X", user_id="u")
    with pytest.raises(ValueError, match="frozen"):
        event.event = "Y"  # type: ignore[misc]


def test_distinct_id_and_label() -> None:
    assert Event.track("Buy", anonymous_id="a").distinct_id == "a"
    assert Event.track("Buy", user_id="u", anonymous_id="a").distinct_id == "u"
    assert Event.track("Buy", user_id="u").label == "Buy"
    assert Event.identify(user_id="u").label == "identify"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": "track", "user_id": "u"}, "a track event needs event"),
        ({"type": "group", "user_id": "u"}, "a group event needs group_id"),
        ({"type": "alias", "user_id": "u"}, "an alias event needs previous_id"),
        ({"type": "identify"}, "an identify event needs user_id or anonymous_id"),
    ],
)
def test_the_base_class_applies_the_spec_rules_too(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Event(**fields)
