"""A third-party plugin, built and installed as a real distribution, is found and used.

The plugin is tests/fixtures/webhook_plugin: the same code the README shows plugin authors.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from router_core import Event, PluginRegistry, Router
from tests.conftest import RecordingServer
from tests.distributions import installed_distribution


@pytest.fixture(scope="module")
def installed_webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with installed_distribution(
        "webhook_plugin", tmp_path_factory.mktemp("site"), "event_router_webhook"
    ) as target:
        yield target


def test_installed_plugin_is_discovered_through_its_entry_point(installed_webhook: Path) -> None:
    assert (installed_webhook / "event_router_webhook-1.0.0.dist-info").is_dir()
    registry = PluginRegistry()
    info = {i.name: i for i in registry.infos()}["webhook"]
    assert info.loaded
    assert info.distribution == "event-router-webhook"
    assert info.version == "1.0.0"
    assert info.hooks == ("destination_settings", "send_event")


def test_installed_plugin_receives_events(
    installed_webhook: Path, recording_server: RecordingServer
) -> None:
    destinations: dict[str, Any] = {
        "hook": {"plugin": "webhook", "url": recording_server.url + "/in", "token": "tok-abc-123"}
    }
    with Router(destinations, plugins=PluginRegistry()) as router:
        event = Event.track("Order Completed", user_id="u1", properties={"total": 9.5})
        report = router.send(event)
    assert report.ok, report.to_dict()
    assert report.results["hook"].status_code == 200
    (request,) = recording_server.requests
    assert request["path"] == "/in"
    assert request["headers"]["Authorization"] == "Bearer tok-abc-123"
    (body,) = recording_server.bodies()
    assert body["message_id"] == event.message_id
    assert body["properties"] == {"total": 9.5}


def test_installed_plugin_receives_queued_events(
    installed_webhook: Path, recording_server: RecordingServer, tmp_path: Path
) -> None:
    destinations: dict[str, Any] = {"hook": {"plugin": "webhook", "url": recording_server.url}}
    queue = {"path": str(tmp_path / "outbox.db"), "flush_interval": 0.02}
    with Router(destinations, plugins=PluginRegistry(), queue=queue) as router:
        events = [Event.track(f"Step {n}", user_id="u1") for n in range(3)]
        for event in events:
            router.send(event)
        assert router.flush(timeout=30).complete
    received = sorted(body["message_id"] for body in recording_server.bodies())
    assert received == sorted(event.message_id for event in events)


def test_installed_plugin_failures_stay_in_its_own_result(
    installed_webhook: Path, recording_server: RecordingServer
) -> None:
    recording_server.status = 503
    destinations: dict[str, Any] = {
        "hook": {"plugin": "webhook", "url": recording_server.url, "retry": {"max_attempts": 1}}
    }
    with Router(destinations, plugins=PluginRegistry()) as router:
        result = router.send(Event.identify(user_id="u1")).results["hook"]
    assert not result.success
    assert result.status_code == 503
    assert result.error == "Webhook API error: HTTP 503"


def test_bad_plugin_settings_name_the_destination_and_field(installed_webhook: Path) -> None:
    with pytest.raises(Exception, match=r"destinations\.hook\.url: Input should be a valid URL"):
        Router({"hook": {"plugin": "webhook", "url": "not a url"}}, plugins=PluginRegistry())
