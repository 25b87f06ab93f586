"""Validation is the whole contract: what is accepted serialises every way; the rest is refused.

Examples at the limits (nesting, integer range, timestamps, text) are accepted and written by
both plugins, the outbox and orjson. Then hypothesis throws arbitrary values (any keys, text
with lone surrogates, NaN and infinities, huge integers and decimals, bytes, extreme datetimes)
at ``Event.parse``, the ``Event`` constructors, ``Router.send`` (direct and through an outbox)
and the config loader, and only the project's own errors may come out.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import event_router_posthog
import event_router_segment
import orjson
import pytest
from event_router_posthog.wire import encode_event
from event_router_segment.wire import encode_message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from router_core import (
    Delivery,
    Destination,
    Event,
    InvalidEventError,
    PluginRegistry,
    Router,
    RouterConfig,
    RouterError,
    hookimpl,
)
from router_core.config import read_toml
from router_core.jsonable import MAX_DEPTH, MAX_INT, MIN_INT

# Bounded, so the suite stays fast; no example database, so the work tree stays clean.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def serialise_every_way(event: Event) -> None:
    """Every way an accepted event is written: both plugins, the outbox, orjson."""
    segment = encode_message(event)
    posthog = encode_event(event, "company").json
    stored = event.model_dump_json()
    orjson.dumps(event.model_dump())
    orjson.dumps(event.model_dump(mode="json"))
    for text in (segment, posthog, stored):
        assert orjson.loads(text) == json.loads(text)
    assert json.loads(segment)["messageId"] == event.message_id
    # The outbox worker rebuilds the event from what was stored: it must be the same event,
    # whether validated again or rebuilt as stored (Event.from_stored, what workers use).
    assert Event.parse(json.loads(stored)) == event
    for payload in (stored, event.stored_json()):  # what the outbox stores: either form
        rebuilt = Event.from_stored(payload)
        assert type(rebuilt) is type(event)
        assert rebuilt == event
        assert rebuilt.model_dump_json() == stored
    assert orjson.loads(event.stored_json()) == orjson.loads(stored)


def assert_readable(exc: RouterError) -> None:
    """A refusal names what is wrong and can be logged and printed anywhere."""
    str(exc).encode("utf-8")  # no lone surrogate echoed back
    if isinstance(exc, InvalidEventError):
        assert exc.problems


def nested(levels: int, leaf: Any = 1) -> Any:
    """``levels`` objects and arrays around ``leaf``, alternating."""
    value = leaf
    for level in range(levels):
        value = {"k": value} if level % 2 else [value]
    return value


# -- at the limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["properties", "traits", "context", "integrations"])
def test_nesting_up_to_the_limit_is_accepted_and_serialises(field: str) -> None:
    # The field's own object is level 1.
    event = Event.parse(
        {"type": "identify", "user_id": "u", field: {"deep": nested(MAX_DEPTH - 1)}}
    )
    serialise_every_way(event)


@pytest.mark.parametrize("number", [MIN_INT, MAX_INT, -1, 0, 2**63, 1.7976931348623157e308])
def test_numbers_at_the_ends_of_the_range_are_accepted_and_serialise(number: float) -> None:
    event = Event.track("X", user_id="u", properties={"n": number}, traits={"nested": [number]})
    assert event.properties["n"] == number
    serialise_every_way(event)


@pytest.mark.parametrize(
    "timestamp",
    [
        "9999-12-31T23:59:59.999999+00:00",
        "9999-12-31T23:59:59+05:00",  # 18:59 UTC
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00-01:00",  # 01:00 UTC
        datetime.max,  # naive: taken as UTC
        datetime.min,
    ],
)
def test_timestamps_at_the_ends_of_years_1_to_9999_are_accepted(timestamp: Any) -> None:
    serialise_every_way(Event.track("X", user_id="u", timestamp=timestamp))


def test_any_valid_unicode_is_accepted_and_serialises() -> None:
    text = "Zoë 🎉 \u0000 \u2028 \ufeff"
    event = Event.track(
        text,
        user_id=text,
        anonymous_id=text,
        message_id=text,
        properties={text: text, "list": [text], "nested": {text: {text: text}}},
        context={text: text},
    )
    serialise_every_way(event)
    assert json.loads(encode_message(event))["properties"][text] == text


def test_converted_values_serialise() -> None:
    event = Event.track(
        "X",
        user_id=2**64 - 1,
        properties={
            "when": datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
            "money": Decimal("1e308"),
            "tiny": Decimal("1e-400"),  # becomes 0.0: JSON can carry that
            "plan": Plan.PRO,
            "tags": frozenset({"b", "a"}),
            1: "int keys become strings",
        },
    )
    assert event.user_id == str(2**64 - 1)
    assert event.properties["tiny"] == 0.0
    serialise_every_way(event)


# -- values ------------------------------------------------------------------------------------


class Plan(enum.Enum):
    PRO = "pro"
    ODD = ("a", 1)


class Level(enum.IntEnum):
    HIGH = 3


SURROGATES = st.sampled_from(["\udcff", "\ud800", "\udfff"])
CHARACTERS = st.one_of(st.characters(exclude_categories=[]), SURROGATES)
TEXT = st.text(CHARACTERS, max_size=12)
VALID_TEXT = st.text(max_size=12)
INTS = st.one_of(
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([MIN_INT, MAX_INT, MIN_INT - 1, MAX_INT + 1]),
    # Thousands of digits, past the 4,300 that str() and repr() refuse to write.
    st.integers(min_value=20, max_value=6000).map(lambda digits: -(10**digits)),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
DECIMALS = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.sampled_from([Decimal("1e400"), Decimal("-1e400"), Decimal("1e-400"), Decimal("sNaN")]),
)
OFFSETS = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23)),
)
DATETIMES = st.one_of(
    st.datetimes(timezones=st.one_of(st.none(), OFFSETS)),
    st.sampled_from(
        [
            datetime.max.replace(tzinfo=timezone(timedelta(hours=-5))),
            datetime.min.replace(tzinfo=timezone(timedelta(hours=1))),
            datetime.max,
            datetime.min,
        ]
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    TEXT,
    INTS,
    FLOATS,
    DECIMALS,
    DATETIMES,
    st.dates(),
    st.times(timezones=st.one_of(st.none(), OFFSETS)),
    st.uuids(),
    st.sampled_from([Plan.PRO, Plan.ODD, Level.HIGH]),
    st.binary(max_size=4),
    st.just(bytearray(b"x")),
    st.builds(object),
    st.complex_numbers(max_magnitude=10),
)
HASHABLE = st.one_of(st.none(), st.booleans(), TEXT, INTS, FLOATS, st.uuids())
KEYS = st.one_of(
    TEXT, TEXT, INTS, st.booleans(), st.none(), FLOATS, st.tuples(INTS), st.uuids(), st.binary()
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(KEYS, children, max_size=4),
        st.frozensets(HASHABLE, max_size=3),
        st.builds(nested, st.integers(min_value=55, max_value=300), children),
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=20)

# Values the router accepts: JSON types, and what it converts (dates, decimals, UUIDs, ...).
GOOD_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        VALID_TEXT,
        st.integers(min_value=MIN_INT, max_value=MAX_INT),
        st.floats(allow_nan=False, allow_infinity=False),
        st.decimals(allow_nan=False, allow_infinity=False, places=3),
        DATETIMES,
        st.dates(),
        st.uuids(),
        st.sampled_from([Plan.PRO, Level.HIGH]),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children),
        st.dictionaries(VALID_TEXT, children, max_size=3),
        st.frozensets(VALID_TEXT, max_size=3),
    ),
    max_leaves=10,
)
GOOD_OBJECTS = st.dictionaries(VALID_TEXT, GOOD_VALUES, max_size=4)
GOOD_IDS = st.one_of(VALID_TEXT.filter(bool), st.integers(min_value=MIN_INT, max_value=MAX_INT))
GOOD_NAMES = VALID_TEXT.filter(bool)
TYPES = ("track", "identify", "page", "screen", "group", "alias")
GOOD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event": GOOD_NAMES,
    "user_id": GOOD_IDS,
    "group_id": GOOD_IDS,
    "previous_id": GOOD_IDS,
}
OPTIONAL_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "anonymous_id": GOOD_IDS,
    "properties": GOOD_OBJECTS,
    "traits": GOOD_OBJECTS,
    "context": GOOD_OBJECTS,
    "integrations": GOOD_OBJECTS,
    "timestamp": st.one_of(DATETIMES, DATETIMES.map(lambda d: d.isoformat())),
    "message_id": st.text(min_size=1, max_size=100),
    "name": GOOD_NAMES,
    "category": GOOD_NAMES,
}
CAMEL = {
    "user_id": "userId",
    "anonymous_id": "anonymousId",
    "message_id": "messageId",
    "group_id": "groupId",
    "previous_id": "previousId",
}
# What may replace a field: wrong types, bad text, objects holding a bad value somewhere.
HOSTILE: dict[str, st.SearchStrategy[Any]] = {
    "type": VALUES,
    "event": st.one_of(TEXT, VALUES),
    "user_id": st.one_of(TEXT, INTS, VALUES),
    "anonymous_id": st.one_of(TEXT, INTS, VALUES),
    "group_id": st.one_of(TEXT, INTS, VALUES),
    "previous_id": st.one_of(TEXT, INTS, VALUES),
    "properties": st.one_of(st.dictionaries(KEYS, VALUES, max_size=4), VALUES),
    "traits": st.one_of(st.dictionaries(KEYS, VALUES, max_size=4), VALUES),
    "context": st.one_of(st.dictionaries(KEYS, VALUES, max_size=4), VALUES),
    "integrations": st.one_of(st.dictionaries(KEYS, VALUES, max_size=4), VALUES),
    "timestamp": st.one_of(DATETIMES, TEXT, INTS, FLOATS, VALUES),
    "message_id": st.one_of(TEXT, VALUES),
    "name": st.one_of(TEXT, VALUES),
    "category": st.one_of(TEXT, VALUES),
}


@st.composite
def event_data(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid event with none, one or a few fields replaced by something hostile."""
    data: dict[Any, Any] = {"type": draw(st.sampled_from(TYPES))}
    data.update(draw(st.fixed_dictionaries(GOOD_FIELDS, optional=OPTIONAL_FIELDS)))
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        field = draw(st.sampled_from(sorted(HOSTILE)))
        data[field] = draw(HOSTILE[field])
    if draw(st.integers(0, 9)) == 0:
        data.update(draw(st.dictionaries(KEYS, VALUES, max_size=2)))  # fields that do not exist
    if draw(st.booleans()):  # Segment's camelCase spelling
        data = {CAMEL.get(key, key): value for key, value in data.items()}
    return data


# -- Event.parse and the constructors -----------------------------------------------------------


@FUZZ
@given(event_data())
def test_parse_accepts_only_what_serialises(data: dict[Any, Any]) -> None:
    try:
        event = Event.parse(data)
    except InvalidEventError as exc:
        assert_readable(exc)
        return
    serialise_every_way(event)


# Each takes (first, second, **fields): second is the user id (alias: previous id, user id).
CONSTRUCTORS: dict[str, Callable[..., Event]] = {
    "track": lambda first, second, **f: Event.track(first, **{"user_id": second, **f}),
    "identify": lambda first, second, **f: Event.identify(**{"user_id": second, **f}),
    "page": lambda first, second, **f: Event.page(first, **{"user_id": second, **f}),
    "screen": lambda first, second, **f: Event.screen(first, **{"user_id": second, **f}),
    "group": lambda first, second, **f: Event.group(first, **{"user_id": second, **f}),
    "alias": Event.alias,
}
# Keyword fields the constructors do not take positionally, good or hostile.
KEYWORDS = {
    field: st.one_of(OPTIONAL_FIELDS.get(field, GOOD_IDS), hostile)
    for field, hostile in HOSTILE.items()
    if field not in {"event", "name", "group_id", "type"}
}


@FUZZ
@given(
    st.sampled_from(sorted(CONSTRUCTORS)),
    st.one_of(GOOD_NAMES, HOSTILE["event"]),
    st.one_of(GOOD_IDS, HOSTILE["user_id"]),
    st.fixed_dictionaries({}, optional={**KEYWORDS, "type": st.sampled_from(TYPES)}),
)
def test_constructors_accept_only_what_serialises(
    kind: str, first: Any, second: Any, fields: dict[str, Any]
) -> None:
    if kind == "alias":
        fields.pop("previous_id", None)
        fields.pop("user_id", None)
    try:
        event = CONSTRUCTORS[kind](first, second, **fields)
    except InvalidEventError as exc:
        assert_readable(exc)
        return
    serialise_every_way(event)


# -- Router.send ---------------------------------------------------------------------------------


class Serialising:
    """A destination that writes each event every way the project writes events."""

    def __init__(self) -> None:
        self.received: list[Event] = []

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        serialise_every_way(event)
        self.received.append(event)
        return Delivery(200)


@pytest.fixture(scope="module")
def serialising() -> Serialising:
    return Serialising()


@pytest.fixture(scope="module")
def registry(serialising: Serialising) -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(serialising, "serialising")
    return registry


@pytest.fixture(scope="module")
def direct_router(registry: PluginRegistry) -> Iterator[Router]:
    with Router({"fuzz": {"plugin": "serialising"}}, plugins=registry) as router:
        yield router


@pytest.fixture(scope="module")
def queued_router(registry: PluginRegistry) -> Iterator[Router]:
    queue = {"backend": "memory", "flush_interval": 0.01}
    with Router({"fuzz": {"plugin": "serialising"}}, plugins=registry, queue=queue) as router:
        yield router


@pytest.mark.parametrize(
    "data",
    [
        {"type": ["track"], "event": "X", "user_id": "u"},
        {"type": "track", "event": "X", "user_id": "u", "timestamp": "9999-12-31T23:59:59-05:00"},
        {"type": "track", "event": "X", "user_id": "u", "properties": nested(600)},
        {"type": "track", "event": "X", "user_id": "u\udcff"},
        {"type": "identify", "user_id": "u", "context": {"n": Decimal("1e400")}},
        {"type": "identify", "user_id": "u", "traits": {"raw": b"bytes"}},
        {"type": "identify", "user_id": "u", "integrations": {("a",): True}},
    ],
)
@pytest.mark.parametrize("queued", [False, True])
def test_router_send_refuses_before_any_destination_or_outbox(
    direct_router: Router,
    queued_router: Router,
    serialising: Serialising,
    data: dict[str, Any],
    queued: bool,
) -> None:
    before = len(serialising.received)
    with pytest.raises(InvalidEventError):
        (queued_router if queued else direct_router).send(data)
    assert queued_router.flush(timeout=30).complete
    assert len(serialising.received) == before


@FUZZ
@given(event_data())
def test_router_send_delivers_or_refuses(
    direct_router: Router, serialising: Serialising, data: dict[Any, Any]
) -> None:
    try:
        report = direct_router.send(data)
    except InvalidEventError as exc:
        assert_readable(exc)
        return
    result = report.results["fuzz"]
    assert result.success, result.exception
    assert serialising.received[-1].message_id == report.message_id


@settings(FUZZ, max_examples=50)
@given(event_data())
def test_the_outbox_gives_the_plugin_the_event_that_was_sent(
    queued_router: Router, serialising: Serialising, data: dict[Any, Any]
) -> None:
    try:
        event = Event.parse(data)
    except InvalidEventError:
        return
    report = queued_router.send(event)
    assert report.queued
    assert queued_router.flush(timeout=30).complete
    assert serialising.received[-1] == event


# -- the config loader ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("places")
    (root / "file").write_text("")
    return {
        "dir": str(root),
        "file": str(root / "file"),
        "under_file": str(root / "file" / "outbox.db"),
        "new": str(root / "new" / "outbox.db"),
    }


@pytest.fixture(scope="module")
def builtin_plugins() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_segment, "segment")
    registry.register(event_router_posthog, "posthog")
    return registry


TOML_VALUES = st.recursive(
    st.one_of(TEXT, INTS, FLOATS, st.booleans(), DATETIMES, st.dates(), st.times()),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(TEXT, children, max_size=3)
    ),
    max_leaves=12,
)
ANY = st.one_of(TOML_VALUES, VALUES)
SEGMENT = st.fixed_dictionaries(
    {"plugin": st.just("segment"), "write_key": st.sampled_from(["${KEY}", "wk"])},
    optional={
        "host": st.sampled_from(["http://127.0.0.1:9", "https://api.segment.io"]),
        "region": st.sampled_from(["us", "eu"]),
    },
)
POSTHOG = st.fixed_dictionaries(
    {"plugin": st.just("posthog"), "api_key": st.sampled_from(["phc_x", "${KEY:-phc_y}"])},
    optional={"host": st.just("http://127.0.0.1:9")},
)
ROUTING = st.fixed_dictionaries(
    {},
    optional={
        "events": st.lists(VALID_TEXT, max_size=3),
        "types": st.lists(st.sampled_from(TYPES), max_size=3),
        "enabled": st.booleans(),
        "timeout": st.floats(min_value=0.1, max_value=30),
        "retry": st.fixed_dictionaries({}, optional={"max_attempts": st.integers(1, 5)}),
    },
)
DESTINATIONS = st.dictionaries(
    st.sampled_from(["segment", "posthog", "eu", "us"]),
    st.builds(lambda table, routing: {**table, **routing}, st.one_of(SEGMENT, POSTHOG), ROUTING),
    min_size=1,
    max_size=2,
)


@st.composite
def config_data(draw: st.DrawFn, places: dict[str, str]) -> dict[Any, Any]:
    """A valid config with none, one or a few values replaced by something hostile."""
    queue_paths = ["/dev/null", "a\0b", "\ud800", "", *places.values()]
    data: dict[Any, Any] = draw(
        st.fixed_dictionaries(
            {"destinations": DESTINATIONS},
            optional={
                "logging": st.fixed_dictionaries({"format": st.sampled_from(["json", "console"])}),
                "queue": st.fixed_dictionaries(
                    {"path": st.sampled_from(queue_paths)},
                    optional={"backend": st.sampled_from(["sqlite", "memory"])},
                ),
            },
        )
    )
    for _ in range(draw(st.integers(min_value=0, max_value=3))):
        # A table somewhere in the config, and one of its keys, gets a hostile value.
        destinations = data.get("destinations")
        tables = [data, *(destinations.values() if isinstance(destinations, dict) else ())]
        tables = [t for t in (*tables, data.get("queue")) if isinstance(t, dict)]
        table = draw(st.sampled_from(tables))
        key = draw(st.one_of(st.sampled_from(list(table)), KEYS))
        table[key] = draw(st.one_of(TEXT, INTS, FLOATS, ANY))
    return data


def load_and_resolve(load: Callable[[], RouterConfig], registry: PluginRegistry) -> None:
    try:
        config = load()
        config.resolve(registry, env={"KEY": "k" * 20})
    except RouterError as exc:
        assert_readable(exc)


@FUZZ
@given(st.data())
def test_from_dict_raises_only_config_errors(
    places: dict[str, str], builtin_plugins: PluginRegistry, data: st.DataObject
) -> None:
    table = data.draw(config_data(places))
    load_and_resolve(lambda: RouterConfig.from_dict(table), builtin_plugins)


TOML_ISH = st.one_of(
    st.text(st.sampled_from(list("[]{}=.,\"'\n #ab1-_:+eE\\")), max_size=80),
    st.text(CHARACTERS, max_size=40),
    st.builds(lambda n: f"a = {'[' * n}{']' * n}", st.integers(0, 5000)),
    st.builds(lambda n: f"{'.'.join(['a'] * n)} = 1", st.integers(1, 200)),
    st.builds(lambda n: f"[queue]\npath = {json.dumps(n)}", st.sampled_from(["/dev/null", "/"])),
)


@FUZZ
@given(TOML_ISH)
def test_read_toml_raises_only_config_errors(
    places: dict[str, str], builtin_plugins: PluginRegistry, text: str
) -> None:
    path = Path(places["dir"]) / "router.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))  # a lone surrogate: bad UTF-8
    try:
        read_toml(path)
    except RouterError as exc:
        assert_readable(exc)
    load_and_resolve(lambda: RouterConfig.load(path), builtin_plugins)
