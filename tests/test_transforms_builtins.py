"""Each built-in transform, on every event type, nested paths and absent fields included."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from router_core import Event, TransformOutcome, TransformPipeline
from router_core.transforms.fields import Drop
from router_core.transforms.selection import Rename

KEY = "pseudonym-key-0123456789abcdef"
KEY_ID = "2026-01"

CONTEXT: dict[str, Any] = {
    "ip": "203.0.113.77",
    "page": {
        "url": "https://shop.example/cart?coupon=SAVE&utm_source=news#pay",
        "referrer": "https://search.example/?q=shoes",
        "search": "?coupon=SAVE&utm_source=news",
        "title": "Cart",
    },
    "library": {"name": "app", "version": "1.0"},
}
PROPERTIES: dict[str, Any] = {
    "total": 99.5,
    "plan": "pro",
    "card_number": "4111111111111111",
    "card_expiry": "12/30",
    "url": "https://shop.example/done?order=1",
    "account": {"owner_id": 42, "secret": "s1", "name": "Acme"},
    "billing": {"secret": "s2"},
}
TRAITS: dict[str, Any] = {"email": "ann@example.com", "name": "Ann", "address": {"city": "Oslo"}}


def _track() -> Event:
    return Event.track(
        "Order Completed",
        user_id="user-1",
        anonymous_id="anon-1",
        properties=PROPERTIES,
        context=CONTEXT,
    )


def _identify() -> Event:
    return Event.identify(user_id="user-1", anonymous_id="anon-1", traits=TRAITS, context=CONTEXT)


def _page() -> Event:
    return Event.page("Cart", anonymous_id="anon-1", properties=PROPERTIES, context=CONTEXT)


def _screen() -> Event:
    return Event.screen("Home", user_id="user-1", properties={"plan": "pro"})


def _group() -> Event:
    return Event.group("group-9", user_id="user-1", traits=TRAITS, context=CONTEXT)


def _alias() -> Event:
    return Event.alias("anon-1", "user-1")


BUILDERS: dict[str, Callable[[], Event]] = {
    "track": _track,
    "identify": _identify,
    "page": _page,
    "screen": _screen,
    "group": _group,
    "alias": _alias,
}
every_type = pytest.mark.parametrize("make", BUILDERS.values(), ids=BUILDERS.keys())


def _apply(tables: list[dict[str, Any]], event: Event) -> TransformOutcome:
    pipeline = TransformPipeline.build("dest", tables)
    assert pipeline is not None
    return pipeline.apply(event)


def _one(tables: list[dict[str, Any]], event: Event) -> Event:
    outcome = _apply(tables, event)
    assert outcome.ok, outcome.error
    assert len(outcome.events) == 1
    (out,) = outcome.events
    assert out.message_id == event.message_id
    assert type(out) is type(event)
    return out


def _reference(value: str, key: str = KEY, key_id: str = KEY_ID) -> str:
    digest = hmac.new(key.encode(), value.encode(), hashlib.sha256).hexdigest()
    return f"h1:{key_id}:{digest}"


def _rest(event: Event, *changed: str) -> dict[str, Any]:
    dumped = event.model_dump()
    for name in changed:
        dumped.pop(name)
    return dumped


# -- pseudonymize -----------------------------------------------------------------------------

PSEUDONYMIZE: dict[str, Any] = {
    "type": "pseudonymize",
    "key": KEY,
    "key_id": KEY_ID,
    "fields": [
        "user_id",
        "anonymous_id",
        "previous_id",
        "group_id",
        "traits.email",
        "traits.address",
        "properties.account.owner_id",
    ],
}


@every_type
def test_pseudonymize_hashes_each_id_present_and_leaves_absent_ones_absent(
    make: Callable[[], Event],
) -> None:
    event = make()
    out = _one([PSEUDONYMIZE], event)
    for name in ("user_id", "anonymous_id", "previous_id", "group_id"):
        raw = getattr(event, name)
        assert getattr(out, name) == (None if raw is None else _reference(raw)), name
    if "email" in event.traits:
        assert out.traits["email"] == _reference("ann@example.com")
        # Not a string: compact JSON with sorted keys, then hashed.
        assert out.traits["address"] == _reference('{"city":"Oslo"}')
        assert out.traits["name"] == "Ann"
    else:
        assert out.traits == event.traits
    if "account" in event.properties:
        assert out.properties["account"] == {**PROPERTIES["account"], "owner_id": _reference("42")}
    changed = ("user_id", "anonymous_id", "previous_id", "group_id", "traits", "properties")
    assert _rest(out, *changed) == _rest(event, *changed)


def test_pseudonymize_gives_one_value_the_same_pseudonym_in_every_field() -> None:
    # alias previous_id -> user_id links the same people after hashing as before.
    tables = [PSEUDONYMIZE]
    alias = _one(tables, Event.alias("anon-1", "user-1"))
    page = _one(tables, Event.page(anonymous_id="anon-1"))
    track = _one(tables, Event.track("x", user_id="user-1"))
    assert alias.previous_id == page.anonymous_id
    assert alias.user_id == track.user_id


def test_pseudonymize_leaves_empty_and_null_values_as_they_are() -> None:
    event = Event.identify(anonymous_id="anon-1", user_id="", traits={"email": None})
    out = _one([PSEUDONYMIZE], event)
    assert out.user_id == ""
    assert out.traits == {"email": None}
    assert out.anonymous_id == _reference("anon-1")


def test_a_new_key_and_key_id_change_every_pseudonym() -> None:
    event = _track()
    old = _one([PSEUDONYMIZE], event)
    new_key = "another-key-fedcba9876543210"
    new = _one([{**PSEUDONYMIZE, "key": new_key, "key_id": "2026-07"}], event)
    assert new.user_id == _reference("user-1", new_key, "2026-07")
    assert new.user_id != old.user_id
    assert old.user_id is not None
    assert old.user_id.startswith("h1:2026-01:")
    same_key_new_id = _one([{**PSEUDONYMIZE, "key_id": "2026-07"}], event)
    assert same_key_new_id.user_id == _reference("user-1", KEY, "2026-07")


# -- drop / allow -----------------------------------------------------------------------------

DROP: dict[str, Any] = {
    "type": "drop",
    "paths": ["properties.card_*", "context.ip", "traits.email", "properties.*.secret"],
}


@every_type
def test_drop_removes_matching_paths_nested_included(make: Callable[[], Event]) -> None:
    event = make()
    out = _one([DROP], event)
    assert not any(k.startswith("card_") for k in out.properties)
    assert "ip" not in out.context
    assert "email" not in out.traits
    assert all("secret" not in v for v in out.properties.values() if isinstance(v, dict))
    if event.properties.get("account"):
        assert out.properties["account"] == {"owner_id": 42, "name": "Acme"}
        assert out.properties["billing"] == {}
        assert out.properties["plan"] == "pro"
    if event.context:
        assert out.context["page"] == CONTEXT["page"]
    objects = ("properties", "traits", "context")
    assert _rest(out, *objects) == _rest(event, *objects)


@every_type
def test_allow_keeps_only_the_named_paths_in_the_named_objects(make: Callable[[], Event]) -> None:
    event = make()
    out = _one([{"type": "allow", "paths": ["properties.plan", "properties.total"]}], event)
    expected = {k: event.properties[k] for k in ("plan", "total") if k in event.properties}
    assert out.properties == expected
    assert out.traits == event.traits  # not named: untouched
    assert out.context == event.context


def test_allow_reaches_nested_paths() -> None:
    out = _one([{"type": "allow", "paths": ["properties.account.name", "traits.*"]}], _track())
    assert out.properties == {"account": {"name": "Acme"}}


def test_a_transform_that_changes_nothing_returns_the_same_event_object() -> None:
    event = _screen()
    outcome = _apply([DROP, {"type": "scrub_ip"}, {"type": "strip_query"}], event)
    assert outcome.events == (event,)
    assert outcome.events[0] is event


# -- scrub_ip ---------------------------------------------------------------------------------


@every_type
def test_scrub_ip_removes_context_ip(make: Callable[[], Event]) -> None:
    event = make()
    out = _one([{"type": "scrub_ip"}], event)
    assert "ip" not in out.context
    assert {k: v for k, v in event.context.items() if k != "ip"} == out.context


@pytest.mark.parametrize(
    ("ip", "truncated"),
    [
        ("203.0.113.77", "203.0.113.0"),
        ("2001:db8:85a3:8d3:1319:8a2e:370:7348", "2001:db8:85a3::"),
        ("::ffff:198.51.100.9", "198.51.100.0"),
        ("fe80::1%eth0", "fe80::"),
        ("10.0.0.0", "10.0.0.0"),
    ],
)
def test_scrub_ip_truncates_ipv4_to_24_and_ipv6_to_48_bits(ip: str, truncated: str) -> None:
    event = Event.track("x", user_id="u", context={"ip": ip})
    out = _one([{"type": "scrub_ip", "mode": "truncate"}], event)
    assert out.context == {"ip": truncated}


@pytest.mark.parametrize("ip", ["not an ip", "999.1.1.1", 12345])
def test_scrub_ip_removes_what_it_cannot_truncate(ip: object) -> None:
    event = Event.track("x", user_id="u", context={"ip": ip, "locale": "nb"})
    out = _one([{"type": "scrub_ip", "mode": "truncate"}], event)
    assert out.context == {"locale": "nb"}


def test_scrub_ip_takes_other_paths() -> None:
    event = Event.track("x", user_id="u", properties={"client": {"ip": "1.2.3.4"}})
    out = _one([{"type": "scrub_ip", "paths": ["properties.*.ip"], "mode": "truncate"}], event)
    assert out.properties == {"client": {"ip": "1.2.3.0"}}


# -- strip_query ------------------------------------------------------------------------------


@every_type
def test_strip_query_removes_query_strings_from_page_urls(make: Callable[[], Event]) -> None:
    event = make()
    out = _one([{"type": "strip_query"}], event)
    if event.context:
        assert out.context["page"] == {
            "url": "https://shop.example/cart#pay",
            "referrer": "https://search.example/",
            "search": "",
            "title": "Cart",
        }
    if "url" in event.properties:
        assert out.properties["url"] == "https://shop.example/done"
    assert _rest(out, "context", "properties") == _rest(event, "context", "properties")


def test_strip_query_can_remove_only_named_parameters() -> None:
    out = _one([{"type": "strip_query", "params": ["utm_*", "order"]}], _page())
    assert out.context["page"]["url"] == "https://shop.example/cart?coupon=SAVE#pay"
    assert out.context["page"]["search"] == "?coupon=SAVE"
    assert out.context["page"]["referrer"] == "https://search.example/?q=shoes"
    assert out.properties["url"] == "https://shop.example/done"  # its only parameter went


def test_strip_query_keeps_the_rest_of_the_url_byte_for_byte() -> None:
    url = "https://x.example/a%20b?keep=a%2Bb&drop=1&x=&keep=2#frag?not=query"
    event = Event.page(anonymous_id="a", properties={"url": url})
    out = _one([{"type": "strip_query", "params": ["drop"]}], event)
    assert out.properties["url"] == "https://x.example/a%20b?keep=a%2Bb&x=&keep=2#frag?not=query"
    fragment_only = Event.page(anonymous_id="a", properties={"url": "https://x/#a?b=c"})
    assert _apply([{"type": "strip_query"}], fragment_only).events[0] is fragment_only


def test_strip_query_leaves_non_strings_alone() -> None:
    event = Event.page(anonymous_id="a", properties={"url": 7, "referrer": None})
    assert _apply([{"type": "strip_query"}], event).events[0] is event


# -- drop_events ------------------------------------------------------------------------------

DROP_EVENTS: dict[str, Any] = {"type": "drop_events", "events": ["Debug *"], "types": ["screen"]}


@every_type
def test_drop_events_drops_by_type(make: Callable[[], Event]) -> None:
    event = make()
    outcome = _apply([DROP_EVENTS], event)
    if event.type == "screen":
        assert outcome == TransformOutcome(dropped="dropped by transform drop_events")
    else:
        assert outcome.events == (event,)


def test_drop_events_drops_track_events_by_name_pattern() -> None:
    assert _apply([DROP_EVENTS], Event.track("Debug Clicked", user_id="u")).dropped == (
        "dropped by transform drop_events"
    )
    kept = Event.track("Order Debug", user_id="u")
    assert _apply([DROP_EVENTS], kept).events == (kept,)
    by_type_pattern = _apply([{"type": "drop_events", "events": ["iden*"]}], _identify())
    assert by_type_pattern.dropped == "dropped by transform drop_events"


# -- rename -----------------------------------------------------------------------------------


@every_type
def test_rename_renames_track_events_only(make: Callable[[], Event]) -> None:
    event = make()
    out = _one([{"type": "rename", "events": {"Order Completed": "purchase", "Home": "x"}}], event)
    if event.type == "track":
        assert out.event == "purchase"
        assert _rest(out, "event") == _rest(event, "event")
    else:
        assert out is event


# -- sample -----------------------------------------------------------------------------------


@every_type
def test_sample_rate_zero_drops_and_rate_one_keeps(make: Callable[[], Event]) -> None:
    event = make()
    assert _apply([{"type": "sample", "rate": 0}], event).dropped == "sampled out"
    assert _apply([{"type": "sample", "rate": 1}], event).events == (event,)


def test_sample_keeps_or_drops_every_event_of_one_user() -> None:
    tables = [{"type": "sample", "rate": 0.5, "salt": "s"}]
    for n in range(40):
        user = f"user-{n}"
        events = [
            Event.track("a", user_id=user, anonymous_id="shared"),
            Event.identify(user_id=user),
            Event.page(user_id=user),
            Event.screen(user_id=user),
            Event.group("g", user_id=user),
            Event.alias("prev", user),
        ]
        kept = {bool(_apply(tables, e).events) for e in events}
        assert len(kept) == 1, user
    anonymous = [Event.page(anonymous_id="visitor-7"), Event.track("a", anonymous_id="visitor-7")]
    assert len({bool(_apply(tables, e).events) for e in anonymous}) == 1


def test_sample_with_one_salt_nests_and_another_salt_picks_other_users() -> None:
    users = [Event.track("a", user_id=f"user-{n}") for n in range(2000)]

    def kept(rate: float, salt: str) -> set[str]:
        tables = [{"type": "sample", "rate": rate, "salt": salt}]
        return {str(e.user_id) for e in users if _apply(tables, e).events}

    assert kept(0.1, "a") <= kept(0.3, "a")
    assert kept(0.3, "a") != kept(0.3, "b")


# -- order ------------------------------------------------------------------------------------


def test_transforms_run_in_order() -> None:
    event = _track()
    rename_then_drop: list[dict[str, Any]] = [
        {"type": "rename", "events": {"Order Completed": "Debug order"}},
        {"type": "drop_events", "events": ["Debug *"]},
    ]
    assert _apply(rename_then_drop, event).dropped == "dropped by transform drop_events"
    assert _apply(rename_then_drop[::-1], event).events[0].event == "Debug order"
    hashed_then_dropped = _one([PSEUDONYMIZE, DROP], _identify())
    assert "email" not in hashed_then_dropped.traits


def test_the_same_event_and_config_give_byte_identical_output() -> None:
    tables = [PSEUDONYMIZE, DROP, {"type": "scrub_ip", "mode": "truncate"}, {"type": "strip_query"}]
    event = _track()
    first = _one(tables, event).model_dump_json()
    again = _one(tables, Event.parse(json.loads(event.model_dump_json()))).model_dump_json()
    assert first == again


def test_no_transforms_means_no_pipeline() -> None:
    assert TransformPipeline.build("dest", []) is None
    assert TransformPipeline.build("dest", None) is None


# -- failures ---------------------------------------------------------------------------------


def test_a_built_in_that_raises_fails_the_destination_with_a_transform_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: object, fields: Any) -> Any:
        raise KeyError("context")

    monkeypatch.setattr(Drop, "__call__", broken)
    outcome = _apply([{"type": "scrub_ip"}, DROP], _track())
    assert outcome.events == ()
    assert outcome.error is not None
    assert (outcome.error.index, outcome.error.transform) == (1, "drop")
    assert str(outcome.error) == (
        "destinations.dest.transforms[1] (drop) failed: KeyError: 'context'"
    )


def test_a_built_in_cannot_produce_an_invalid_event(monkeypatch: pytest.MonkeyPatch) -> None:
    def unidentified(self: object, fields: Any) -> Any:
        return {**fields, "user_id": None, "anonymous_id": None}

    monkeypatch.setattr(Rename, "__call__", unidentified)
    tables: list[dict[str, Any]] = [
        {"type": "rename", "events": {"a": "b"}},
        {"type": "strip_query"},
    ]
    outcome = _apply(tables, _track())
    assert outcome.error is not None
    assert (outcome.error.index, outcome.error.transform) == (0, "rename")  # not strip_query
    assert outcome.error.reason == (
        "produced an invalid event: invalid track event: "
        "a track event needs user_id or anonymous_id"
    )
