"""What goes on the wire to Segment: URL, headers, envelope, camelCase messages, limits."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx
from event_router_segment import (
    SegmentAPIError,
    SegmentSettings,
    batch_limits,
    destination_settings,
    encode_message,
    send_batch,
    send_event,
)

from router_core import BatchLimits, Delivery, Destination, Event
from router_core.http import LIBRARY_NAME, LIBRARY_VERSION, USER_AGENT
from router_core.testing import destination

KEY = "wk_wire_7hGf2kQx"
WHEN = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
LIBRARY = {"name": LIBRARY_NAME, "version": LIBRARY_VERSION}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The router's pooled client sends the User-Agent; plugins do not set it themselves.
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as http:
        yield http


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def _destination(client: httpx.AsyncClient, **settings: Any) -> Destination[SegmentSettings]:
    return destination("segment", SegmentSettings(write_key=KEY, **settings), client, timeout=4.0)


def _ok(api: respx.MockRouter, url: str = "https://api.segment.io/v1/batch") -> respx.Route:
    return api.post(url).respond(200, json={"success": True})


def _body(route: respx.Route) -> dict[str, Any]:
    request = route.calls.last.request
    content = request.content
    if request.headers.get("content-encoding") == "gzip":
        content = gzip.decompress(content)
    parsed: dict[str, Any] = json.loads(content)
    return parsed


def _sent_message(route: respx.Route) -> dict[str, Any]:
    (message,) = _body(route)["batch"]
    assert isinstance(message, dict)
    return message


# -- the six event types ------------------------------------------------------------------------

USER_CONTEXT = {"ip": "203.0.113.5", "locale": "en-US", "page": {"url": "https://ex.com/a"}}
INTEGRATIONS = {"All": True, "Mixpanel": False}

CASES: list[tuple[Event, dict[str, Any]]] = [
    (
        Event.track(
            "Order Completed",
            user_id="user_12345",
            properties={"order_id": "order_67890", "total": 99.99, "products": ["A", "B"]},
        ),
        {
            "type": "track",
            "userId": "user_12345",
            "event": "Order Completed",
            "properties": {"order_id": "order_67890", "total": 99.99, "products": ["A", "B"]},
        },
    ),
    (
        Event.identify(user_id="user_12345", traits={"email": "ada@example.com", "plan": "pro"}),
        {
            "type": "identify",
            "userId": "user_12345",
            "traits": {"email": "ada@example.com", "plan": "pro"},
        },
    ),
    (
        Event.page("Pricing", anonymous_id="anon_9", category="Docs", properties={"path": "/p"}),
        {
            "type": "page",
            "anonymousId": "anon_9",
            "name": "Pricing",
            "category": "Docs",
            "properties": {"path": "/p"},
        },
    ),
    (
        Event.screen("Home", user_id="user_1", anonymous_id="anon_1"),
        {
            "type": "screen",
            "userId": "user_1",
            "anonymousId": "anon_1",
            "name": "Home",
            "properties": {},
        },
    ),
    (
        Event.group("org_42", user_id="user_12345", traits={"name": "Initech", "employees": 40}),
        {
            "type": "group",
            "userId": "user_12345",
            "groupId": "org_42",
            "traits": {"name": "Initech", "employees": 40},
        },
    ),
    (
        Event.alias("anon_9", "user_12345"),
        {"type": "alias", "userId": "user_12345", "previousId": "anon_9"},
    ),
]


def _with_common(event: Event) -> Event:
    """The same event with context, integrations and a fixed non-UTC timestamp."""
    return Event.parse(
        {
            **event.model_dump(),
            "context": USER_CONTEXT,
            "integrations": INTEGRATIONS,
            "timestamp": WHEN.astimezone(timezone(timedelta(hours=2))),
        }
    )


@pytest.mark.parametrize(("event", "fields"), CASES, ids=[e.type for e, _ in CASES])
async def test_message_body_for_each_event_type(
    client: httpx.AsyncClient, api: respx.MockRouter, event: Event, fields: dict[str, Any]
) -> None:
    event = _with_common(event)
    route = _ok(api)
    before = datetime.now(UTC)

    delivery = await send_event(_destination(client), event)

    assert delivery == Delivery(status_code=200, output={"success": True})
    assert route.call_count == 1
    body = _body(route)
    assert list(body) == ["batch", "sentAt", "writeKey"]
    assert body["writeKey"] == KEY
    sent_at = datetime.fromisoformat(body["sentAt"])
    assert sent_at.utcoffset() is not None
    assert sent_at >= before
    expected = {
        **fields,
        "messageId": event.message_id,
        "timestamp": "2024-05-01T12:30:15.250000+00:00",
        "context": {**USER_CONTEXT, "library": LIBRARY},
        "integrations": INTEGRATIONS,
    }
    assert _sent_message(route) == expected


def test_every_spec_type_is_covered() -> None:
    assert sorted(e.type for e, _ in CASES) == sorted(
        ["track", "identify", "page", "screen", "group", "alias"]
    )


async def test_body_is_compact_json(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    route = _ok(api)
    await send_event(_destination(client), _with_common(CASES[0][0]))
    content = route.calls.last.request.content
    compact = json.dumps(json.loads(content), separators=(",", ":"), ensure_ascii=False)
    assert content == compact.encode()


async def test_event_is_not_modified(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    _ok(api)
    event = Event.track("Signed Up", user_id="u1", context={"ip": "203.0.113.9"})
    before = event.model_dump()
    await send_event(_destination(client), event)
    assert event.model_dump() == before
    assert "library" not in event.context


async def test_omits_absent_ids_and_page_fields(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    await send_event(_destination(client), Event.page(anonymous_id="anon_3"))
    message = _sent_message(route)
    assert "userId" not in message
    assert "name" not in message
    assert "category" not in message
    assert message["anonymousId"] == "anon_3"
    assert message["context"] == {"library": LIBRARY}


async def test_non_ascii_text_is_sent_as_utf8(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    await send_event(_destination(client), Event.track("Café ☕", user_id="ü"))
    content = route.calls.last.request.content
    assert "Café ☕".encode() in content
    assert _sent_message(route)["event"] == "Café ☕"


# -- request line and headers -------------------------------------------------------------------


async def test_headers_and_basic_auth(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    route = _ok(api)
    await send_event(_destination(client), Event.track("Signed Up", user_id="u1"))
    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == "https://api.segment.io/v1/batch"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert "content-encoding" not in request.headers
    scheme, _, token = request.headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token) == f"{KEY}:".encode()


async def test_uses_the_destination_timeout(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    await send_event(_destination(client), Event.track("Signed Up", user_id="u1"))
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout == {"connect": 4.0, "read": 4.0, "write": 4.0, "pool": 4.0}


async def test_region_eu_posts_to_the_eu_host(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    us = _ok(api)
    eu = _ok(api, "https://events.eu1.segmentapis.com/v1/batch")
    await send_event(_destination(client, region="eu"), Event.track("Signed Up", user_id="u1"))
    assert eu.call_count == 1
    assert not us.called


async def test_custom_host_is_used(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    route = _ok(api, "https://collect.example.com/segment/v1/batch")
    destination = _destination(client, host="https://collect.example.com/segment/")
    await send_event(destination, Event.identify(user_id="u1"))
    assert route.call_count == 1
    assert _body(route)["writeKey"] == KEY


async def test_gzip_body(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    plain_route = _ok(api, "https://plain.example.com/v1/batch")
    gzip_route = _ok(api)
    event = _with_common(CASES[0][0])
    await send_event(_destination(client, host="https://plain.example.com"), event)
    await send_event(_destination(client, gzip=True), event)

    plain = plain_route.calls.last.request
    zipped = gzip_route.calls.last.request
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.headers["content-type"] == "application/json"
    unzipped = json.loads(gzip.decompress(zipped.content))
    expected = json.loads(plain.content)
    # Everything but the send time is identical to the uncompressed request.
    assert {**unzipped, "sentAt": None} == {**expected, "sentAt": None}


# -- limits -------------------------------------------------------------------------------------


def _padded(size: int, padding_key: str = "blob") -> Event:
    """A track event whose encoded message is exactly ``size`` bytes."""
    base = Event.track("Big", user_id="u1", message_id="m-fixed", timestamp=WHEN)
    empty = len(encode_message(base.model_copy(update={"properties": {padding_key: ""}})))
    return base.model_copy(update={"properties": {padding_key: "x" * (size - empty)}})


def test_batch_limits_hook() -> None:
    assert batch_limits() == BatchLimits(
        max_events=2500, max_request_bytes=500_000, max_event_bytes=32_000
    )
    assert destination_settings() is SegmentSettings


async def test_event_at_the_limit_is_sent(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    route = _ok(api)
    event = _padded(32_000)
    assert len(encode_message(event)) == 32_000
    await send_event(_destination(client), event)
    assert route.call_count == 1


async def test_event_over_32kb_is_refused_without_a_request(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    event = _padded(40_123)
    with pytest.raises(SegmentAPIError) as info:
        await send_event(_destination(client), event)
    assert not route.called
    error = info.value
    assert str(error) == (
        "Segment API error: event is 40,123 bytes, over Segment's 32 KB per-event limit"
    )
    assert error.retryable is False
    assert error.status_code is None


async def test_batch_of_several_events_is_one_request(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    events = [_with_common(event) for event, _ in CASES]
    delivery = await send_batch(_destination(client), events)
    assert delivery == Delivery(status_code=200, output={"success": True})
    assert route.call_count == 1
    body = _body(route)
    assert [m["messageId"] for m in body["batch"]] == [e.message_id for e in events]
    assert [m["type"] for m in body["batch"]] == [e.type for e in events]
    assert body["writeKey"] == KEY


async def test_batch_names_the_event_over_the_limit(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    events = [Event.track("Small", user_id="u1"), _padded(33_000)]
    with pytest.raises(SegmentAPIError, match=r"event 'm-fixed' is 33,000 bytes, over Segment's"):
        await send_batch(_destination(client), events)
    assert not route.called


async def test_batch_over_500kb_is_refused_without_a_request(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    events = [_padded(30_000) for _ in range(17)]  # each fits; together over 500 KB
    with pytest.raises(SegmentAPIError) as info:
        await send_batch(_destination(client), events)
    assert not route.called
    assert str(info.value).startswith("Segment API error: batch request is 510,")
    assert str(info.value).endswith("bytes, over Segment's 500 KB per-request limit")
    assert info.value.retryable is False


async def test_batch_over_2500_events_is_refused_without_a_request(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    event = Event.track("Tiny", user_id="u1")
    with pytest.raises(SegmentAPIError) as info:
        await send_batch(_destination(client), [event] * 2501)
    assert not route.called
    assert str(info.value) == (
        "Segment API error: batch has 2,501 events, over Segment's 2,500-event per-request limit"
    )
    assert info.value.retryable is False


async def test_batch_of_2500_small_events_is_sent(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    # Segment's two batch limits meet here: 2,500 of the smallest messages just fit 500 KB.
    event = Event.track(
        "T", user_id="u", message_id="m", timestamp=datetime(2024, 5, 1, tzinfo=UTC)
    )
    await send_batch(_destination(client), [event] * 2500)
    assert len(_body(route)["batch"]) == 2500


async def test_empty_batch_sends_nothing(client: httpx.AsyncClient, api: respx.MockRouter) -> None:
    route = _ok(api)
    delivery = await send_batch(_destination(client), [])
    assert delivery.output == {"success": True}
    assert not route.called


async def test_event_changed_into_non_json_is_refused(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = _ok(api)
    event = Event.track("Bad", user_id="u1", message_id="m-nan")
    event.properties["ratio"] = float("nan")  # mutated after validation
    with pytest.raises(SegmentAPIError, match="event 'm-nan' cannot be sent as JSON"):
        await send_event(_destination(client), event)
    assert not route.called
