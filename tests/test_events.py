"""The event model: the six Segment-spec types, validation errors, JSON-safe properties."""

from __future__ import annotations

import enum
import os
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
from router_core.jsonable import MAX_DEPTH


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


def test_generated_message_ids_are_distinct_random_uuid4s() -> None:
    ids = [Event.track("E", user_id="u1").message_id for _ in range(3_000)]  # several batches
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical: lowercase, dashed
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_a_forked_child_never_hands_out_the_parents_message_ids() -> None:
    Event.track("E", user_id="u1")  # ids are made ahead, a batch at a time
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, Event.track("E", user_id="c").message_id.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    parents = {Event.track("E", user_id="p").message_id for _ in range(300)}
    assert uuid.UUID(child).version == 4
    assert child not in parents


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


# -- validation is the whole contract: what JSON cannot carry is refused when built -------------


def refused(data: dict[str, Any]) -> InvalidEventError:
    """The error ``Event.parse(data)`` raises; its message must be printable anywhere."""
    with pytest.raises(InvalidEventError) as caught:
        Event.parse(data)
    str(caught.value).encode("utf-8")  # no lone surrogate echoed back
    return caught.value


def track(**fields: Any) -> dict[str, Any]:
    return {"type": "track", "event": "X", "user_id": "u", **fields}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"type": ["track"], "event": "X", "user_id": "u"}, "type"),
        ({"type": {"a": 1}, "event": "X", "user_id": "u"}, "type"),
        ({"type": 10**5000, "event": "X", "user_id": "u"}, "type"),
        ({"type": 1, "event": "X", "user_id": "u"}, "type"),
        (track(user_id=["u"]), "user_id"),
        (track(anonymous_id={"a": 1}), "anonymous_id"),
        (track(event=5), "event"),
        (track(message_id={"id": 1}), "message_id"),
        (track(name=["n"]), "name"),
        (track(timestamp=[2024]), "timestamp"),
        (track(properties="a string"), "properties"),
        (track(context=[("a", 1)]), "context"),
    ],
)
def test_fields_of_the_wrong_json_type_are_refused(data: dict[str, Any], path: str) -> None:
    assert path in [p for p, _ in refused(data).problems]


def test_a_stray_type_keyword_is_a_validation_error_not_a_type_error() -> None:
    with pytest.raises(InvalidEventError, match="invalid track event: type: Input should be"):
        Event.track("X", user_id="u", type="identify")


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59-05:00",
        "0001-01-01T00:00:00+01:00",
        datetime.max.replace(tzinfo=timezone(timedelta(hours=-1))),
        datetime.min.replace(tzinfo=timezone(timedelta(minutes=1))),
    ],
)
def test_timestamps_outside_years_1_to_9999_in_utc_are_refused(timestamp: Any) -> None:
    error = refused(track(timestamp=timestamp))
    assert error.problems == (
        ("timestamp", "falls outside the years 1 to 9999 once converted to UTC"),
    )


def nest(levels: int, kind: str = "dict") -> Any:
    value: Any = 1
    for _ in range(levels):
        value = {"a": value} if kind == "dict" else [value]
    return value


@pytest.mark.parametrize("field", ["properties", "traits", "context", "integrations"])
@pytest.mark.parametrize("kind", ["dict", "list"])
def test_nesting_deeper_than_the_limit_is_refused_with_the_path(field: str, kind: str) -> None:
    # The field's object is level 1, so MAX_DEPTH more levels inside it is one too many.
    error = refused(track(**{field: {"x": nest(MAX_DEPTH, kind)}}))
    ((path, message),) = error.problems
    step = ".a" if kind == "dict" else "[0]"
    assert path == f"{field}.x" + step * (MAX_DEPTH - 1)
    assert message.startswith(f"nested more than {MAX_DEPTH} levels deep")
    assert Event.parse(track(**{field: {"x": nest(MAX_DEPTH - 1, kind)}}))


@pytest.mark.parametrize("levels", [600, 10_000, 100_000])
def test_any_depth_is_refused_without_exhausting_the_stack(levels: int) -> None:
    assert "nested more than" in str(refused(track(properties=nest(levels))))


def test_a_value_containing_itself_is_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    assert "contains itself" in str(refused(track(properties={"loop": loop})))


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"user_id": "u\udcff"}, "user_id"),
        ({"anonymous_id": "\ud800"}, "anonymous_id"),
        ({"event": "Order \udcff"}, "event"),
        ({"message_id": "m-\udfff"}, "message_id"),
        ({"group_id": "\udcff"}, "group_id"),
        ({"previous_id": "\udcff"}, "previous_id"),
        ({"name": "\udcff"}, "name"),
        ({"category": "\udcff"}, "category"),
        ({"properties": {"a": "\udcff"}}, "properties.a"),
        ({"properties": {"\udcff": 1}}, "properties"),
        ({"properties": {"a": {"b": ["ok", "\udcff"]}}}, "properties.a.b[1]"),
        ({"traits": {"t": {"\udcff"}}}, "traits.t[]"),
        ({"context": {"page": {"\udcff": "x"}}}, "context.page"),
        ({"integrations": {"All": "\udcff"}}, "integrations.All"),
    ],
)
def test_lone_surrogates_are_refused_wherever_they_are(fields: dict[str, Any], path: str) -> None:
    error = refused({**track(), "group_id": "g", "previous_id": "p", **fields})
    assert [p for p, _ in error.problems] == [path]
    assert "lone surrogate" in str(error)


def test_a_field_name_with_a_lone_surrogate_is_refused() -> None:
    error = refused(track(**{"us\udcffer_id": "u"}))
    assert "lone surrogate" in str(error)
    assert "\\udcff" in str(error)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("1e400"), "Decimal('1E+400') is not a finite number once converted"),
        (Decimal("-1e400"), "is not a finite number once converted"),
        (Decimal("NaN"), "is not a finite number"),
        (float("inf"), "inf is not a finite number"),
        (float("-inf"), "-inf is not a finite number"),
        (2**64, "18446744073709551616 is outside the accepted integer range -2**63 .. 2**64-1"),
        (-(2**63) - 1, "is outside the accepted integer range"),
        pytest.param(10**5000, "an integer of about 5001 digits is outside", id="5001-digits"),
    ],
)
def test_numbers_json_cannot_carry_are_refused_with_their_path(value: Any, message: str) -> None:
    for field in ("properties", "traits", "context", "integrations"):
        error = refused(track(**{field: {"n": [value]}}))
        assert error.problems == ((f"{field}.n[0]", error.problems[0][1]),)
        assert message in error.problems[0][1]


@pytest.mark.parametrize("user_id", [2**64, -(2**63) - 1, pytest.param(10**5000, id="5001-digits")])
def test_integer_ids_outside_the_range_are_refused(user_id: int) -> None:
    error = refused(track(user_id=user_id))
    assert [p for p, _ in error.problems] == ["user_id"]
    assert "send it as a string" in str(error)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (True, "key True must be a string"),
        (None, "key None must be a string"),
        ((1, 2), "key (1, 2) must be a string"),
        (1.5, "key 1.5 must be a string"),
        (b"k", "key b'k' must be a string"),
        (2**64, "key 18446744073709551616 is outside -2**63 .. 2**64-1"),
        pytest.param(
            10**5000,
            "key an integer of about 5001 digits is outside -2**63 .. 2**64-1",
            id="5001-digits",
        ),
    ],
)
def test_keys_that_are_not_strings_are_refused(key: Any, message: str) -> None:
    for field in ("properties", "traits", "context", "integrations"):
        error = refused(track(**{field: {"ok": {key: 1}}}))
        assert error.problems == ((f"{field}.ok", message),)


def test_two_keys_that_are_one_string_in_json_are_refused() -> None:
    error = refused(track(properties={1: "int", "1": "str"}))
    assert error.problems == (("properties", "keys 1 and '1' are the same in JSON"),)


@pytest.mark.parametrize("value", [b"raw", bytearray(b"raw"), memoryview(b"raw"), 1j, object()])
@pytest.mark.parametrize("field", ["properties", "traits", "context", "integrations"])
def test_other_objects_are_refused_in_every_field(value: Any, field: str) -> None:
    error = refused(track(**{field: {"v": value}}))
    assert error.problems[0][0] == f"{field}.v"
    assert "cannot be sent as JSON" in error.problems[0][1]


def test_subclasses_of_plain_types_become_the_plain_type() -> None:
    class Text(str):
        pass

    class Number(int):
        pass

    event = Event.track("X", user_id="u", properties={"t": Text("a"), "n": Number(3)})
    assert type(event.properties["t"]) is str
    assert type(event.properties["n"]) is int
