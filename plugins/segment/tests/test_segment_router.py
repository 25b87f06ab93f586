"""The Segment plugin driven by the real Router: entry point, config, results, retries, HTTP."""

from __future__ import annotations

import base64
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path
from typing import Any

import event_router_segment
import httpx
import pytest
import respx
from event_router_segment import LIMITS, SegmentAPIError

from router_core import Event, PluginRegistry, Router
from router_core.http import LIBRARY_NAME, USER_AGENT
from router_core.secrets import MASK

KEY = "wk_router_Nc42sYbd"
URL = "https://api.segment.io/v1/batch"


def _registry() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_segment, "segment")
    return registry


def _router(**table: Any) -> Router:
    settings = {"plugin": "segment", "write_key": KEY, "retry": {"max_attempts": 1}, **table}
    return Router({"segment": settings}, plugins=_registry())


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def _order() -> Event:
    return Event.track("Order Completed", user_id="user_12345", properties={"total": 99.99})


# -- discovery ----------------------------------------------------------------------------------


def test_entry_point_is_discoverable() -> None:
    found = [ep for ep in metadata.entry_points(group="event_router") if ep.name == "segment"]
    assert len(found) == 1
    (entry_point,) = found
    assert entry_point.value == "event_router_segment"
    assert entry_point.load() is event_router_segment
    assert entry_point.dist is not None
    assert entry_point.dist.metadata["Name"] == "event-router-segment"


def test_registry_loads_the_installed_plugin() -> None:
    registry = PluginRegistry(only=["segment"])
    assert registry.failures() == {}
    plugin = registry.get("segment")
    assert plugin.info.hooks == ("batch_limits", "destination_settings", "send_batch", "send_event")
    assert plugin.is_async
    assert plugin.batch_is_async
    assert plugin.limits == LIMITS
    assert plugin.settings_model is event_router_segment.SegmentSettings


# -- through the router, Segment mocked ---------------------------------------------------------


def test_router_delivers_to_segment(api: respx.MockRouter) -> None:
    route = api.post(URL).respond(200, json={"success": True})
    event = _order()
    with _router() as router:
        report = router.send(event)

    result = report.results["segment"]
    assert report.ok
    assert result.success is True
    assert result.status_code == 200
    assert result.output == {"success": True}
    assert result.attempts == 1
    assert route.call_count == 1
    request = route.calls.last.request
    body = json.loads(request.content)
    assert body["writeKey"] == KEY
    (message,) = body["batch"]
    assert message["messageId"] == event.message_id
    assert message["event"] == "Order Completed"
    assert message["context"]["library"]["name"] == LIBRARY_NAME
    assert request.headers["user-agent"] == USER_AGENT


def test_router_accepts_a_plain_dict(api: respx.MockRouter) -> None:
    route = api.post(URL).respond(200, json={"success": True})
    with _router() as router:
        report = router.send({"type": "identify", "userId": "u7", "traits": {"plan": "pro"}})
    assert report.results["segment"].success
    (message,) = json.loads(route.calls.last.request.content)["batch"]
    assert (message["type"], message["userId"], message["traits"]) == (
        "identify",
        "u7",
        {"plan": "pro"},
    )


def test_router_reports_a_401(api: respx.MockRouter) -> None:
    api.post(URL).respond(401, text=f"invalid write key {KEY}")
    with _router() as router:
        report = router.send(_order())

    result = report.results["segment"]
    assert not report.ok
    assert result.success is False
    assert result.status_code == 401
    assert result.error == "Segment API error: HTTP 401"
    assert isinstance(result.exception, SegmentAPIError)
    assert result.attempts == 1
    # The router registered the key as a secret, so an echo of it in the body is masked.
    assert result.exception.body == f"invalid write key {MASK}"
    assert KEY not in json.dumps(report.to_dict())


def test_router_does_not_retry_an_oversized_event(api: respx.MockRouter) -> None:
    route = api.post(URL).respond(200, json={"success": True})
    big = Event.track("Big", user_id="u1", properties={"blob": "x" * 40_000})
    with _router(retry={"max_attempts": 3, "backoff_base": 0}) as router:
        report = router.send(big)
    result = report.results["segment"]
    assert result.success is False
    assert result.attempts == 1
    assert result.error is not None
    assert result.error.startswith("Segment API error: event is 40,")
    assert not route.called


def test_router_retries_a_503_with_the_same_message_id(api: respx.MockRouter) -> None:
    route = api.post(URL).mock(
        side_effect=[
            httpx.Response(503, headers={"Retry-After": "0"}, text="busy"),
            httpx.Response(200, json={"success": True}),
        ]
    )
    event = _order()
    with _router(retry={"max_attempts": 2}) as router:
        report = router.send(event)
    result = report.results["segment"]
    assert result.success is True
    assert result.attempts == 2
    ids = [json.loads(call.request.content)["batch"][0]["messageId"] for call in route.calls]
    assert ids == [event.message_id, event.message_id]


def test_router_from_toml_config_with_env_key_and_eu_region(
    api: respx.MockRouter, tmp_path: Path
) -> None:
    eu = api.post("https://events.eu1.segmentapis.com/v1/batch").respond(200, text="")
    config = tmp_path / "router.toml"
    config.write_text(
        '[destinations.segment_eu]\nplugin = "segment"\n'
        'write_key = "${SEGMENT_WRITE_KEY}"\nregion = "eu"\n',
        encoding="utf-8",
    )
    with Router.from_config(config, plugins=_registry(), env={"SEGMENT_WRITE_KEY": KEY}) as router:
        report = router.send(_order())
    assert report.results["segment_eu"].success
    assert eu.call_count == 1
    assert json.loads(eu.calls.last.request.content)["writeKey"] == KEY


# -- real HTTP on loopback ----------------------------------------------------------------------


@dataclass
class _Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class _FakeSegment:
    """A Segment-compatible server on 127.0.0.1 that records each request."""

    status: int = 200
    received: list[_Received] = field(default_factory=list)


@pytest.fixture
def fake_segment() -> Iterator[tuple[_FakeSegment, str]]:
    state = _FakeSegment()

    class Handler(BaseHTTPRequestHandler):
        timeout = 5  # a stuck client cannot hold the server thread forever

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.received.append(
                _Received("POST", self.path, dict(self.headers.items()), self.rfile.read(length))
            )
            payload = json.dumps({"success": state.status < 300}).encode()
            self.send_response(state.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_real_http_with_gzip_to_a_compatible_server(
    fake_segment: tuple[_FakeSegment, str],
) -> None:
    state, host = fake_segment
    event = Event.page("Pricing", anonymous_id="anon_1", properties={"url": "https://ex.com/p"})
    with _router(host=host, gzip=True, timeout=5) as router:
        report = router.send(event)

    assert report.results["segment"].success, report.results["segment"].error
    assert report.results["segment"].status_code == 200
    (request,) = state.received
    assert request.path == "/v1/batch"
    headers = {k.lower(): v for k, v in request.headers.items()}
    assert headers["content-encoding"] == "gzip"
    assert headers["content-type"] == "application/json"
    assert headers["authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    body = json.loads(gzip.decompress(request.body))
    assert body["writeKey"] == KEY
    (message,) = body["batch"]
    assert message["type"] == "page"
    assert message["name"] == "Pricing"
    assert message["anonymousId"] == "anon_1"
    assert message["messageId"] == event.message_id


def test_real_http_403_is_a_permanent_failure(fake_segment: tuple[_FakeSegment, str]) -> None:
    state, host = fake_segment
    state.status = 403
    with _router(host=host, timeout=5, retry={"max_attempts": 3, "backoff_base": 0}) as router:
        report = router.send(_order())
    result = report.results["segment"]
    assert result.success is False
    assert result.status_code == 403
    assert result.error == "Segment API error: HTTP 403"
    assert result.attempts == 1
    assert len(state.received) == 1
