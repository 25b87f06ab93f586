"""SDK-shaped shortcuts, the off switch, and the app's own HTTP client or [http] table."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import event_router_posthog
import httpx
import pytest
import respx

from router_core import (
    ConfigError,
    Delivery,
    Destination,
    Event,
    HttpSettings,
    PluginRegistry,
    Router,
    RouterConfig,
    hookimpl,
)
from router_core.response_cap import cap_response_body

KEY = "phc_shapesTestKey"
BATCH_URL = "https://us.i.posthog.com/batch/"


class Recorder:
    def __init__(self) -> None:
        self.events: list[Event] = []

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.events.append(event)
        return Delivery(status_code=200)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def router(recorder: Recorder) -> Iterator[Router]:
    registry = PluginRegistry(entry_points=False)
    registry.register(recorder, "rec")
    with Router({"rec": {"plugin": "rec"}}, plugins=registry) as r:
        yield r


def test_track_takes_segment_sdk_arguments(router: Router, recorder: Recorder) -> None:
    report = router.track(
        "user_1",
        "Order Completed",
        {"total": 9.5},
        context={"ip": "1.2.3.4"},
        timestamp="2024-01-02T03:04:05Z",
        anonymous_id="anon_1",
        integrations={"All": True},
        message_id="m-1",
    )
    assert report.ok
    assert report.message_id == "m-1"
    sent = recorder.events[0]
    assert (sent.type, sent.user_id, sent.event, sent.properties) == (
        "track",
        "user_1",
        "Order Completed",
        {"total": 9.5},
    )
    assert sent.context == {"ip": "1.2.3.4"}
    assert sent.anonymous_id == "anon_1"
    assert sent.integrations == {"All": True}
    assert sent.timestamp.year == 2024


def test_every_shortcut_builds_its_event(router: Router, recorder: Recorder) -> None:
    router.identify("u1", {"plan": "pro"})
    router.page("u1", "Docs", "Pricing", {"path": "/pricing"})
    router.screen("u1", "App", "Home")
    router.group("u1", "acme", {"seats": 3})
    router.alias("anon-9", "u1")
    router.capture("Signed Up", distinct_id="u2", properties={"a": 1})
    got = [(e.type, e.user_id) for e in recorder.events]
    assert got == [
        ("identify", "u1"),
        ("page", "u1"),
        ("screen", "u1"),
        ("group", "u1"),
        ("alias", "u1"),
        ("track", "u2"),
    ]
    identify, page, screen, group, alias, capture = recorder.events
    assert identify.traits == {"plan": "pro"}
    assert (page.category, page.name, page.properties) == ("Docs", "Pricing", {"path": "/pricing"})
    assert (screen.category, screen.name) == ("App", "Home")
    assert (group.group_id, group.traits) == ("acme", {"seats": 3})
    assert alias.previous_id == "anon-9"
    assert (capture.event, capture.properties) == ("Signed Up", {"a": 1})


def test_a_shortcut_with_a_missing_field_raises_before_sending(
    router: Router, recorder: Recorder
) -> None:
    with pytest.raises(Exception, match="event"):
        router.track("u1")
    assert recorder.events == []


# -- the off switch -------------------------------------------------------------------------


def _posthog_registry() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_posthog, "posthog")
    return registry


def test_disabled_validates_and_sends_nothing() -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(BATCH_URL).respond(200)
        with Router(
            {"posthog": {"plugin": "posthog", "api_key": KEY}},
            plugins=_posthog_registry(),
            disabled=True,
        ) as router:
            report = router.track("u1", "Signed Up")
            batch = router.send_many([{"type": "identify", "user_id": "u1"}] * 3)
            with pytest.raises(Exception, match="event"):
                router.send({"type": "track", "user_id": "u1"})
            assert router.disabled
        assert not route.called
    assert report.disabled
    assert report.disabled_for == ("posthog",)
    assert report.results == {}
    assert report.to_dict()["disabled"] is True
    assert batch.counts()["posthog"]["disabled"] == 3


def test_the_environment_variable_disables_and_stores_nothing(tmp_path: Any) -> None:
    outbox = tmp_path / "outbox.db"
    with Router(
        {"posthog": {"plugin": "posthog", "api_key": KEY}},
        plugins=_posthog_registry(),
        env={"EVENT_ROUTER_DISABLED": "1"},
        queue={"path": str(outbox)},
    ) as router:
        report = asyncio.run(router.asend({"type": "track", "event": "A", "user_id": "u1"}))
        assert router.outbox is None
    assert report.disabled
    assert not outbox.exists()


def test_a_bad_disabled_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="EVENT_ROUTER_DISABLED"):
        Router({}, env={"EVENT_ROUTER_DISABLED": "maybe"})


# -- the app's own client -------------------------------------------------------------------


def test_the_apps_async_client_is_used_capped_and_left_open() -> None:
    client = httpx.AsyncClient(headers={"X-App": "mine"})
    with respx.mock() as mock:
        route = mock.post(BATCH_URL).respond(200, json={"status": "Ok"})
        with Router(
            {"posthog": {"plugin": "posthog", "api_key": KEY}},
            plugins=_posthog_registry(),
            http_client=client,
        ) as router:
            assert router.track("u1", "Signed Up").ok
        assert route.calls.last.request.headers["X-App"] == "mine"
    assert cap_response_body in client.event_hooks["response"]
    assert not client.is_closed
    asyncio.run(client.aclose())


def test_a_sync_client_is_refused() -> None:
    with httpx.Client() as sync, pytest.raises(TypeError, match="AsyncClient"):
        Router({}, http_client=sync)  # type: ignore[arg-type]


# -- [http] ---------------------------------------------------------------------------------


def test_http_table_is_validated_and_builds_the_client() -> None:
    config = RouterConfig.from_dict(
        {"http": {"proxy": "http://user:hunter2-secret@proxy.internal:3128", "verify": False}}
    )
    settings = config.http_settings()
    assert settings.proxy == "http://user:hunter2-secret@proxy.internal:3128"
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(config)
    options = settings.client_options()
    assert options["verify"] is False
    assert options["limits"].max_connections == 100
    with Router(config) as router:
        client = router._new_client()
    # httpx mounts a proxy transport for the proxied schemes.
    assert [str(pattern.pattern) for pattern in client._mounts] == ["all://"]
    asyncio.run(client.aclose())


def test_http_table_errors_name_the_key_and_hide_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        RouterConfig.from_dict(
            {"http": {"proxy": "ftp://u:hunter2-secret@h", "max_connections": 0, "pool": 3}}
        )
    text = str(caught.value)
    assert "http.proxy" in text
    assert "http.max_connections" in text
    assert "http.pool" in text
    assert "hunter2-secret" not in text


def test_http_table_expands_variables() -> None:
    config = RouterConfig.from_dict({"http": {"proxy": "${PROXY}", "trust_env": False}})
    settings = config.http_settings({"PROXY": "http://proxy.internal:3128"})
    assert settings == HttpSettings(proxy="http://proxy.internal:3128", trust_env=False)
    with pytest.raises(ConfigError, match="PROXY"):
        config.http_settings({})


def test_unknown_top_level_key_lists_http() -> None:
    with pytest.raises(ConfigError, match="expected consent, destinations, http, logging, queue"):
        RouterConfig.from_dict({"htp": {}})
