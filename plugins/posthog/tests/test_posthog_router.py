"""The PostHog plugin through the real Router, and its entry point."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import event_router_posthog
import httpx
import pytest
import respx
from event_router_posthog import PostHogAPIError

from router_core import Event, PluginRegistry, Router

KEY = "phc_routerTestKey"
BATCH_URL = "https://us.i.posthog.com/batch/"


@pytest.fixture
def registry() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_posthog, "posthog")
    return registry


@pytest.fixture
def posthog() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def _router(registry: PluginRegistry, **table: Any) -> Router:
    config = {"plugin": "posthog", "api_key": KEY, "retry": {"max_attempts": 1}, **table}
    return Router({"posthog": config}, plugins=registry)


def test_posthog_router_delivers(registry: PluginRegistry, posthog: respx.MockRouter) -> None:
    route = posthog.post(BATCH_URL).respond(200, json={"status": "Ok"})
    with _router(registry) as router:
        report = router.send(
            {"type": "track", "event": "page_view", "user_id": "user_123", "properties": {"a": 1}}
        )
    result = report.results["posthog"]
    assert report.ok
    assert result.success is True
    assert result.status_code == 200
    assert result.attempts == 1
    assert result.error is None
    assert result.output == {
        "success": True,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": None,
    }
    sent = json.loads(route.calls.last.request.content)
    assert sent["api_key"] == KEY
    assert sent["batch"][0]["uuid"] == report.message_id


def test_posthog_router_401(registry: PluginRegistry, posthog: respx.MockRouter) -> None:
    route = posthog.post(BATCH_URL).respond(401, json={"type": "authentication_error"})
    with _router(registry) as router:
        report = router.send(Event.track("page_view", user_id="user_123"))
    result = report.results["posthog"]
    assert not report.ok
    assert route.call_count == 1
    assert result.success is False
    assert result.status_code == 401
    assert result.attempts == 1
    assert result.error == "PostHog API error: HTTP 401"
    assert result.output == {
        "success": False,
        "event": "page_view",
        "distinct_id": "user_123",
        "error": "PostHog API error: HTTP 401",
    }
    assert isinstance(result.exception, PostHogAPIError)
    assert KEY not in json.dumps(result.to_dict())


def test_posthog_router_401_is_not_retried(
    registry: PluginRegistry, posthog: respx.MockRouter
) -> None:
    route = posthog.post(BATCH_URL).respond(401)
    with _router(registry, retry={"max_attempts": 3, "backoff_base": 0}) as router:
        report = router.send(Event.track("x", user_id="u"))
    assert route.call_count == 1
    assert report.results["posthog"].attempts == 1


def test_posthog_router_retries_with_the_same_uuid(
    registry: PluginRegistry, posthog: respx.MockRouter
) -> None:
    route = posthog.post(BATCH_URL)
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "0"}),
        httpx.Response(503),
        httpx.Response(200, json={"status": "Ok"}),
    ]
    with _router(registry, retry={"max_attempts": 3, "backoff_base": 0}) as router:
        report = router.send(Event.identify(user_id="u", traits={"plan": "pro"}))
    result = report.results["posthog"]
    assert result.success is True
    assert result.attempts == 3
    uuids = [json.loads(call.request.content)["batch"][0]["uuid"] for call in route.calls]
    assert uuids == [report.message_id] * 3


def test_posthog_router_network_error(registry: PluginRegistry, posthog: respx.MockRouter) -> None:
    posthog.post(BATCH_URL).mock(side_effect=httpx.ConnectError("refused"))
    with _router(registry, retry={"max_attempts": 2, "backoff_base": 0}) as router:
        report = router.send(Event.alias("anon_1", "user_123"))
    result = report.results["posthog"]
    assert result.success is False
    assert result.attempts == 2
    assert result.error == "network error: cannot connect to us.i.posthog.com:443 (ConnectError)"
    assert result.output == {"success": False, "error": result.error}


def test_posthog_router_timeout(registry: PluginRegistry, posthog: respx.MockRouter) -> None:
    posthog.post(BATCH_URL).mock(side_effect=httpx.ReadTimeout("slow"))
    with _router(registry) as router:
        result = router.send(Event.track("page_view", user_id="user_123")).results["posthog"]
    assert result.success is False
    assert result.error == "timed out: ReadTimeout"


def test_posthog_entry_point_is_discoverable() -> None:
    found = [ep for ep in metadata.entry_points(group="event_router") if ep.name == "posthog"]
    assert len(found) == 1
    assert found[0].value == "event_router_posthog"
    assert found[0].load() is event_router_posthog
    assert found[0].dist is not None
    assert found[0].dist.metadata["Name"] == "event-router-posthog"


def test_posthog_loads_from_its_entry_point(posthog: respx.MockRouter) -> None:
    registry = PluginRegistry(only=["posthog"])
    assert registry.names() == ["posthog"]
    info = registry.get("posthog").info
    assert info.distribution == "event-router-posthog"
    assert info.hooks == ("batch_limits", "destination_settings", "send_batch", "send_event")
    route = posthog.post("https://eu.i.posthog.com/batch/").respond(200)
    with _router(registry, host="https://eu.posthog.com") as router:
        report = router.send(Event.page(user_id="u", properties={"url": "https://e.x/"}))
    assert report.ok
    assert json.loads(route.calls.last.request.content)["batch"][0]["event"] == "$pageview"
