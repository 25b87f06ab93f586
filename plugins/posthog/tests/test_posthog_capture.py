"""The PostHog hooks against a mocked capture API: wire format, limits, errors and outputs."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
import respx
from event_router_posthog import (
    PostHogAPIError,
    PostHogSettings,
    batch_limits,
    destination_settings,
    send_batch,
    send_event,
)

from router_core import BatchLimits, Destination, Event
from router_core.http import LIBRARY_NAME, LIBRARY_VERSION, USER_AGENT
from router_core.testing import destination

KEY = "phc_testProjectKey"
BATCH_URL = "https://us.i.posthog.com/batch/"
WHEN = datetime(2024, 5, 1, 12, 30, 15, 250000, tzinfo=UTC)
MESSAGE_ID = "9f1c7d2e-4b7a-4f0e-9d54-2f4a1c3e8b10"
LIB = {"$lib": LIBRARY_NAME, "$lib_version": LIBRARY_VERSION}


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The router's pooled client sends the User-Agent; plugins do not set it themselves.
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as http:
        yield http


@pytest.fixture
def posthog() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def _destination(client: httpx.AsyncClient, **settings: Any) -> Destination[PostHogSettings]:
    return destination(
        "posthog", PostHogSettings.model_validate({"api_key": KEY, **settings}), client, timeout=5.0
    )


def _accept(posthog: respx.MockRouter, url: str = BATCH_URL) -> respx.Route:
    return posthog.post(url).respond(200, json={"status": "Ok"})


def _sent(route: respx.Route) -> dict[str, Any]:
    request = route.calls.last.request
    content = request.content
    if request.headers.get("content-encoding") == "gzip":
        content = gzip.decompress(content)
    body: dict[str, Any] = json.loads(content)
    return body


def _only_event(route: respx.Route) -> dict[str, Any]:
    batch = _sent(route)["batch"]
    assert len(batch) == 1
    event: dict[str, Any] = batch[0]
    return event


# -- wire format ------------------------------------------------------------------------------


async def test_posthog_track_request(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    route = _accept(posthog)
    event = Event.track(
        "Order Completed",
        user_id="user_123",
        anonymous_id="anon_1",
        properties={"total": 99.99, "currency": "EUR", "items": [{"sku": "é"}]},
        timestamp=WHEN,
        message_id=MESSAGE_ID,
    )
    before = datetime.now(UTC)
    delivery = await send_event(_destination(client), event)
    after = datetime.now(UTC)

    request = route.calls.last.request
    assert request.method == "POST"
    assert str(request.url) == BATCH_URL
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == USER_AGENT
    assert "content-encoding" not in request.headers
    body = _sent(route)
    assert body == {
        "api_key": KEY,
        "batch": [
            {
                "event": "Order Completed",
                "distinct_id": "user_123",
                "uuid": MESSAGE_ID,
                "timestamp": "2024-05-01T12:30:15.250000+00:00",
                "properties": {
                    "total": 99.99,
                    "currency": "EUR",
                    "items": [{"sku": "é"}],
                    **LIB,
                },
            }
        ],
        "sent_at": body["sent_at"],
        "historical_migration": False,
    }
    assert list(body) == ["api_key", "batch", "sent_at", "historical_migration"]
    sent_at = datetime.fromisoformat(body["sent_at"])
    assert sent_at.utcoffset() == timedelta(0)
    assert before <= sent_at <= after
    # Compact JSON, UTF-8 as is.
    compact = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    assert request.content == compact
    assert delivery.status_code == 200
    assert delivery.output == {
        "success": True,
        "event": "Order Completed",
        "distinct_id": "user_123",
        "error": None,
    }
    assert list(delivery.output) == ["success", "event", "distinct_id", "error"]


async def test_posthog_timestamp_sent_in_utc(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    local = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    await send_event(_destination(client), Event.track("x", user_id="u", timestamp=local))
    assert _only_event(route)["timestamp"] == "2024-05-01T12:00:00+00:00"


async def test_posthog_anonymous_track_uses_anonymous_id(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    delivery = await send_event(_destination(client), Event.track("Viewed", anonymous_id="a-9"))
    assert _only_event(route)["distinct_id"] == "a-9"
    assert delivery.output["distinct_id"] == "a-9"


async def test_posthog_identify_request(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    traits = {"email": "max@example.com", "plan": "pro"}
    event = Event.identify(
        user_id="user_123",
        anonymous_id="anon_1",
        traits=traits,
        timestamp=WHEN,
        message_id=MESSAGE_ID,
    )
    delivery = await send_event(_destination(client), event)
    assert _only_event(route) == {
        "event": "$identify",
        "distinct_id": "user_123",
        "uuid": MESSAGE_ID,
        "timestamp": "2024-05-01T12:30:15.250000+00:00",
        "properties": {"$set": traits, "$anon_distinct_id": "anon_1", **LIB},
    }
    assert delivery.output["event"] == "$identify"


async def test_posthog_identify_without_both_ids_has_no_anon_distinct_id(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    await send_event(_destination(client), Event.identify(anonymous_id="anon_1", traits={"a": 1}))
    sent = _only_event(route)
    assert sent["distinct_id"] == "anon_1"
    assert sent["properties"] == {"$set": {"a": 1}, **LIB}


async def test_posthog_page_request(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    route = _accept(posthog)
    event = Event.page(
        "Pricing",
        user_id="user_123",
        properties={"url": "https://example.com/pricing", "title": "Pricing"},
        message_id=MESSAGE_ID,
    )
    delivery = await send_event(_destination(client), event)
    sent = _only_event(route)
    assert sent["event"] == "$pageview"
    assert sent["uuid"] == MESSAGE_ID
    assert sent["properties"] == {
        "url": "https://example.com/pricing",
        "title": "Pricing",
        "$current_url": "https://example.com/pricing",
        **LIB,
    }
    assert delivery.output == {
        "success": True,
        "event": "$pageview",
        "distinct_id": "user_123",
        "error": None,
    }


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"context": {"page": {"url": "https://ctx.example/a"}}}, "https://ctx.example/a"),
        (
            {"properties": {"url": "https://p.example/", "$current_url": "https://own.example/"}},
            "https://own.example/",
        ),
        ({}, None),
    ],
)
async def test_posthog_page_url_sources(
    client: httpx.AsyncClient,
    posthog: respx.MockRouter,
    fields: dict[str, Any],
    expected: str | None,
) -> None:
    route = _accept(posthog)
    await send_event(_destination(client), Event.page(user_id="u", **fields))
    assert _only_event(route)["properties"].get("$current_url") == expected


async def test_posthog_screen_request(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    route = _accept(posthog)
    event = Event.screen("Checkout", anonymous_id="dev-1", properties={"step": 2})
    await send_event(_destination(client), event)
    sent = _only_event(route)
    assert sent["event"] == "$screen"
    assert sent["distinct_id"] == "dev-1"
    assert sent["properties"] == {"step": 2, "$screen_name": "Checkout", **LIB}


@pytest.mark.parametrize(
    ("settings", "group_type"), [({}, "company"), ({"group_type": "team"}, "team")]
)
async def test_posthog_group_request(
    client: httpx.AsyncClient,
    posthog: respx.MockRouter,
    settings: dict[str, Any],
    group_type: str,
) -> None:
    route = _accept(posthog)
    event = Event.group(
        "acme-42", user_id="user_123", traits={"name": "Acme", "employees": 11}, timestamp=WHEN
    )
    delivery = await send_event(_destination(client, **settings), event)
    sent = _only_event(route)
    assert sent["event"] == "$groupidentify"
    assert sent["distinct_id"] == "user_123"
    assert sent["properties"] == {
        "$group_type": group_type,
        "$group_key": "acme-42",
        "$group_set": {"name": "Acme", "employees": 11},
        **LIB,
    }
    assert delivery.output["event"] == "$groupidentify"


async def test_posthog_alias_request(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    route = _accept(posthog)
    event = Event.alias("anon_1", "user_123", message_id=MESSAGE_ID)
    delivery = await send_event(_destination(client), event)
    sent = _only_event(route)
    # posthog-python alias(previous_id, distinct_id): sent from the previous id.
    assert sent["event"] == "$create_alias"
    assert sent["distinct_id"] == "anon_1"
    assert sent["uuid"] == MESSAGE_ID
    assert sent["properties"] == {"distinct_id": "anon_1", "alias": "user_123", **LIB}
    assert delivery.output == {
        "success": True,
        "event": "$create_alias",
        "distinct_id": "anon_1",
        "error": None,
    }


async def test_posthog_caller_cannot_override_lib(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    event = Event.track("x", user_id="u", properties={"$lib": "other", "$lib_version": "9"})
    await send_event(_destination(client), event)
    assert _only_event(route)["properties"] == LIB


async def test_posthog_uuid_is_stable_across_attempts(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    event = Event.track("Order Completed", user_id="u")
    destination = _destination(client)
    await send_event(destination, event)
    await send_event(destination, event)
    uuids = [json.loads(call.request.content)["batch"][0]["uuid"] for call in route.calls]
    assert uuids == [event.message_id, event.message_id]


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("https://app.posthog.com", "https://us.i.posthog.com/batch/"),
        ("https://eu.posthog.com/", "https://eu.i.posthog.com/batch/"),
        ("https://posthog.example.com/", "https://posthog.example.com/batch/"),
        ("http://127.0.0.1:8000/ph", "http://127.0.0.1:8000/ph/batch/"),
    ],
)
async def test_posthog_posts_to_the_mapped_host(
    client: httpx.AsyncClient, posthog: respx.MockRouter, host: str, url: str
) -> None:
    route = _accept(posthog, url)
    await send_event(_destination(client, host=host), Event.track("x", user_id="u"))
    assert route.call_count == 1


async def test_posthog_uses_destination_timeout(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    await send_event(_destination(client), Event.track("x", user_id="u"))
    timeout = route.calls.last.request.extensions["timeout"]
    assert timeout == {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


async def test_posthog_gzip_body(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    route = _accept(posthog)
    event = Event.track("Zipped", user_id="u", properties={"text": "hello " * 200})
    await send_event(_destination(client, gzip=True), event)
    request = route.calls.last.request
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["content-type"] == "application/json"
    assert request.content[:2] == b"\x1f\x8b"
    body = json.loads(gzip.decompress(request.content))
    assert body["api_key"] == KEY
    assert body["batch"][0]["event"] == "Zipped"
    assert body["batch"][0]["properties"]["text"] == "hello " * 200
    assert len(request.content) < len(gzip.decompress(request.content))


# -- batches ----------------------------------------------------------------------------------


async def test_posthog_batch_in_one_request(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    events = [
        Event.track("A", user_id="u1"),
        Event.identify(user_id="u2", traits={"x": 1}),
        Event.page(anonymous_id="a3", properties={"url": "https://e.x/"}),
    ]
    delivery = await send_batch(_destination(client), events)
    assert route.call_count == 1
    body = _sent(route)
    assert [e["event"] for e in body["batch"]] == ["A", "$identify", "$pageview"]
    assert [e["uuid"] for e in body["batch"]] == [e.message_id for e in events]
    assert [e["distinct_id"] for e in body["batch"]] == ["u1", "u2", "a3"]
    assert body["historical_migration"] is False
    assert delivery.status_code == 200
    assert delivery.output == {"success": True, "events": 3, "error": None}


async def test_posthog_batch_refused(client: httpx.AsyncClient, posthog: respx.MockRouter) -> None:
    posthog.post(BATCH_URL).respond(400, json={"type": "validation_error"})
    with pytest.raises(PostHogAPIError) as caught:
        await send_batch(_destination(client), [Event.track("A", user_id="u")] * 2)
    assert caught.value.output == {
        "success": False,
        "events": 2,
        "error": "PostHog API error: HTTP 400",
    }
    assert caught.value.retryable is False


async def test_posthog_empty_batch_sends_nothing(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    delivery = await send_batch(_destination(client), [])
    assert not route.called
    assert delivery.output == {"success": True, "events": 0, "error": None}


# -- limits -----------------------------------------------------------------------------------


def test_posthog_hooks_declare_settings_and_limits() -> None:
    assert destination_settings() is PostHogSettings
    assert batch_limits() == BatchLimits(
        max_events=1000, max_request_bytes=20_000_000, max_event_bytes=1_000_000
    )


async def test_posthog_event_over_limit_not_sent(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    event = Event.track("Big", user_id="u", properties={"blob": "x" * 1_000_001})
    with pytest.raises(PostHogAPIError) as caught:
        await send_event(_destination(client), event)
    assert not route.called
    error = caught.value
    assert error.retryable is False
    assert error.status_code is None
    assert "the event is 1,000,1" in error.message
    assert "limit of 1,000,000 bytes per event; nothing was sent" in error.message
    assert error.output == {
        "success": False,
        "event": "Big",
        "distinct_id": "u",
        "error": error.message,
    }


async def test_posthog_event_just_under_limit_is_sent(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    event = Event.track("Big", user_id="u", properties={"blob": "x" * 990_000})
    await send_event(_destination(client), event)
    assert route.call_count == 1


async def test_posthog_batch_event_over_limit_named(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    events = [
        Event.track("ok", user_id="u"),
        Event.track("Big", user_id="u", properties={"b": "x" * 1_000_001}),
    ]
    with pytest.raises(PostHogAPIError, match="event 2 of 2 is 1,000,"):
        await send_batch(_destination(client), events)
    assert not route.called


async def test_posthog_request_over_limit_not_sent(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    route = _accept(posthog)
    # 21 events of ~980 KB: each under the event limit, together over 20 MB.
    events = [Event.track("Big", user_id="u", properties={"b": "x" * 980_000})] * 21
    with pytest.raises(PostHogAPIError) as caught:
        await send_batch(_destination(client, gzip=True), events)
    assert not route.called
    assert caught.value.retryable is False
    assert "limit of 20,000,000 bytes per request; nothing was sent" in caught.value.message
    assert caught.value.output == {"success": False, "events": 21, "error": caught.value.message}


# -- responses and errors ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 204])
async def test_posthog_2xx_is_success(
    client: httpx.AsyncClient, posthog: respx.MockRouter, status: int
) -> None:
    posthog.post(BATCH_URL).respond(status)
    delivery = await send_event(_destination(client), Event.track("x", user_id="u"))
    assert delivery.status_code == status
    assert delivery.output["success"] is True


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (400, False),
        (401, False),
        (403, False),
        (413, False),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
    ],
)
async def test_posthog_error_status_classified(
    client: httpx.AsyncClient, posthog: respx.MockRouter, status: int, retryable: bool
) -> None:
    posthog.post(BATCH_URL).respond(status, text="nope")
    with pytest.raises(PostHogAPIError) as caught:
        await send_event(_destination(client), Event.track("page_view", user_id="user_123"))
    error = caught.value
    assert error.message == f"PostHog API error: HTTP {status}"
    assert str(error) == error.message
    assert error.status_code == status
    assert error.retryable is retryable
    assert error.retry_after is None
    assert error.body == "nope"
    assert error.output == {
        "success": False,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": f"PostHog API error: HTTP {status}",
    }
    assert list(error.output) == ["success", "event", "distinct_id", "error"]


async def test_posthog_401_output_matches_the_capture_job(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    posthog.post(BATCH_URL).respond(401, json={"type": "authentication_error"})
    with pytest.raises(PostHogAPIError) as caught:
        await send_event(_destination(client), Event.track("page_view", user_id="user_123"))
    assert caught.value.output == {
        "success": False,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": "PostHog API error: HTTP 401",
    }


async def test_posthog_429_retry_after(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    posthog.post(BATCH_URL).respond(429, headers={"Retry-After": "7"})
    with pytest.raises(PostHogAPIError) as caught:
        await send_event(_destination(client), Event.track("x", user_id="u"))
    assert caught.value.retryable is True
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.ConnectError, httpx.ReadError]
)
async def test_posthog_transport_errors_are_left_to_the_router(
    client: httpx.AsyncClient, posthog: respx.MockRouter, exc: type[httpx.TransportError]
) -> None:
    # The router classifies them (retryable, "timed out: ReadTimeout") for every destination.
    posthog.post(BATCH_URL).mock(side_effect=exc("slow"))
    with pytest.raises(exc):
        await send_event(_destination(client), Event.track("page_view", user_id="user_123"))


async def test_posthog_key_not_in_errors(
    client: httpx.AsyncClient, posthog: respx.MockRouter
) -> None:
    posthog.post(BATCH_URL).respond(500)
    with pytest.raises(PostHogAPIError) as caught:
        await send_event(_destination(client), Event.track("x", user_id="u"))
    assert KEY not in repr(caught.value)
    assert KEY not in json.dumps(caught.value.output)


def test_message_ids_that_are_not_uuids_map_to_a_stable_uuid() -> None:
    import uuid

    from event_router_posthog.wire import capture_uuid

    plain = "7b0c7a8e-3f0e-4c55-9d3c-3b7d0c8f9a10"
    assert capture_uuid(plain) == plain
    derived = capture_uuid("order-42")
    assert uuid.UUID(derived).version == 5
    assert capture_uuid("order-42") == derived
    assert capture_uuid("order-43") != derived
