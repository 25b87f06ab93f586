"""The router: fan-out, isolation of misbehaving plugins, retries, lifecycle, no leaked secrets."""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from router_core import (
    Delivery,
    DeliveryError,
    Destination,
    DestinationSettings,
    Event,
    InvalidEventError,
    PluginRegistry,
    Router,
    RouterClosedError,
    configure_logging,
    hookimpl,
)

NO_RETRY = {"max_attempts": 1}
FAST_RETRY = {"max_attempts": 4, "backoff_base": 0.001, "backoff_max": 0.002}


class Settings(DestinationSettings):
    token: SecretStr = SecretStr("unset")
    mode: str = "ok"


class Scripted:
    """A plugin whose behaviour each destination picks with ``mode``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failures_left: dict[str, int] = {}
        self.barrier: asyncio.Barrier | None = None
        self.release = threading.Event()

    @hookimpl
    def destination_settings(self) -> type[Settings]:
        return Settings

    @hookimpl
    async def send_event(self, destination: Destination[Settings], event: Event) -> Any:
        mode = destination.settings.mode
        self.calls.append((destination.name, event.message_id))
        if mode == "ok":
            return Delivery(202, {"accepted": destination.name})
        if mode == "raise":
            raise RuntimeError(f"boom with {destination.settings.token.get_secret_value()}")
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "garbage":
            return {"success": True}
        if mode == "none":
            return None
        if mode == "rendezvous":
            assert self.barrier is not None
            await asyncio.wait_for(self.barrier.wait(), timeout=5)
            return Delivery(200)
        if mode == "flaky":
            left = self.failures_left.get(destination.name, 2)
            self.failures_left[destination.name] = left - 1
            if left > 0:
                raise DeliveryError("HTTP 503", status_code=503, retryable=True)
            return Delivery(200)
        if mode == "throttled":
            raise DeliveryError("HTTP 429", status_code=429, retryable=True, retry_after=0.01)
        if mode == "permanent":
            raise DeliveryError(
                "HTTP 401",
                status_code=401,
                body='{"error": "bad key"}',
                output={"success": False, "why": "auth"},
            )
        raise AssertionError(f"unknown mode {mode}")


class BlockingPlugin:
    """A plain (non-async) plugin: the router runs it in a worker thread."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: list[str] = []

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.threads.append(threading.current_thread().name)
        self.release.wait(timeout=5)
        return Delivery(200, {"sync": True})


@pytest.fixture
def plugin() -> Scripted:
    return Scripted()


@pytest.fixture
def registry(plugin: Scripted) -> PluginRegistry:
    reg = PluginRegistry(entry_points=False)
    reg.register(plugin, "scripted")
    return reg


def dest(mode: str = "ok", **extra: Any) -> dict[str, Any]:
    return {"plugin": "scripted", "mode": mode, "retry": NO_RETRY, **extra}


@pytest.fixture
def make_router(registry: PluginRegistry) -> Iterator[Any]:
    routers: list[Router] = []

    def make(destinations: dict[str, dict[str, Any]]) -> Router:
        router = Router(destinations, plugins=registry)
        routers.append(router)
        return router

    yield make
    for router in routers:
        router.close()


def test_results_are_keyed_by_destination_name(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"eu": dest(), "us": dest()})
    report = router.send(Event.track("Order Completed", user_id="u1"))
    assert report.ok
    assert set(report.results) == {"eu", "us"}
    eu = report.results["eu"]
    assert (eu.destination, eu.plugin, eu.success, eu.status_code) == ("eu", "scripted", True, 202)
    assert eu.output == {"accepted": "eu"}
    assert eu.attempts == 1
    assert eu.duration_ms >= 0
    assert sorted(name for name, _ in plugin.calls) == ["eu", "us"]
    assert {mid for _, mid in plugin.calls} == {report.message_id}


def test_plain_dicts_are_accepted(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"d": dest()})
    report = router.send({"type": "track", "event": "Order Completed", "user_id": "u"})
    assert report.ok
    assert plugin.calls == [("d", report.message_id)]


def test_invalid_event_raises_before_any_destination_is_called(
    make_router: Any, plugin: Scripted
) -> None:
    router = make_router({"d": dest()})
    with pytest.raises(InvalidEventError, match="event: Field required"):
        router.send({"type": "track", "user_id": "u"})
    assert plugin.calls == []


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        ("raise", "plugin raised RuntimeError: boom with **********"),
        ("hang", "timed out after 0.2s"),
        ("garbage", "plugin returned dict from send_event, expected Delivery"),
        ("none", "plugin returned NoneType from send_event, expected Delivery"),
    ],
)
def test_a_misbehaving_destination_fails_alone(make_router: Any, mode: str, error: str) -> None:
    router = make_router(
        {
            "good": dest(),
            "bad": dest(mode, token="very-secret-token", timeout=0.2),
            "also_good": dest(),
        }
    )
    report = router.send(Event.track("X", user_id="u"))
    assert not report.ok
    assert report.results["good"].success
    assert report.results["also_good"].success
    bad = report.results["bad"]
    assert not bad.success
    assert bad.error == error
    assert bad.output == {"success": False, "error": error}
    assert list(report.failed) == ["bad"]
    assert "very-secret-token" not in json.dumps(report.to_dict())
    assert "very-secret-token" not in repr(report)


def test_destinations_are_served_concurrently(make_router: Any, plugin: Scripted) -> None:
    # Each delivery waits until the other has started: a sequential fan-out would time out.
    router = make_router({"a": dest("rendezvous"), "b": dest("rendezvous")})

    async def arm() -> None:
        plugin.barrier = asyncio.Barrier(2)

    router._runtime.run(arm())
    report = router.send(Event.track("X", user_id="u"))
    assert report.ok, report.to_dict()


def test_blocking_plugins_run_off_the_event_loop(registry: PluginRegistry) -> None:
    blocking = BlockingPlugin()
    registry.register(blocking, "blocking")
    with Router(
        {"slow": {"plugin": "blocking"}, "fast": {"plugin": "scripted"}}, plugins=registry
    ) as router:
        future = router._runtime.submit(router._fan_out(Event.track("X", user_id="u")))
        # The async destination completes while the blocking one is still waiting.
        deadline = time.monotonic() + 5
        while not blocking.threads and time.monotonic() < deadline:
            time.sleep(0.005)
        assert not future.done()
        blocking.release.set()
        report = future.result(timeout=5)
    assert report.ok
    assert report.results["slow"].output == {"sync": True}
    assert blocking.threads
    assert blocking.threads[0] != "event-router"


def test_transient_failures_are_retried_with_the_same_message_id(
    make_router: Any, plugin: Scripted
) -> None:
    router = make_router({"flaky": dest("flaky", retry=FAST_RETRY)})
    report = router.send(Event.track("X", user_id="u"))
    result = report.results["flaky"]
    assert result.success
    assert result.attempts == 3
    assert [mid for _, mid in plugin.calls] == [report.message_id] * 3


def test_retries_stop_at_max_attempts(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"t": dest("throttled", retry=FAST_RETRY)})
    result = router.send(Event.track("X", user_id="u")).results["t"]
    assert not result.success
    assert result.attempts == 4
    assert result.status_code == 429
    assert len(plugin.calls) == 4


def test_permanent_failures_are_not_retried(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"p": dest("permanent", retry=FAST_RETRY)})
    result = router.send(Event.track("X", user_id="u")).results["p"]
    assert (result.success, result.attempts, result.status_code) == (False, 1, 401)
    assert result.error == "HTTP 401"
    assert result.output == {"success": False, "why": "auth", "error": "HTTP 401"}
    assert isinstance(result.exception, DeliveryError)
    assert len(plugin.calls) == 1


def test_filters_skip_destinations(make_router: Any, plugin: Scripted) -> None:
    router = make_router(
        {"orders": dest(events=["Order *"]), "people": dest(types=["identify"]), "all": dest()}
    )
    report = router.send(Event.track("Order Completed", user_id="u"))
    assert set(report.results) == {"orders", "all"}
    assert report.skipped == ("people",)
    report = router.send(Event.identify(user_id="u"))
    assert set(report.results) == {"people", "all"}


def test_disabled_destinations_are_not_built(make_router: Any) -> None:
    router = make_router({"on": dest(), "off": dest(enabled=False)})
    assert router.destinations == ["on"]


async def test_asend_from_an_asyncio_app(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"a": dest(), "b": dest()})
    reports = await asyncio.gather(
        *(router.asend(Event.track("X", user_id=f"u{i}")) for i in range(20))
    )
    assert all(r.ok for r in reports)
    assert len(plugin.calls) == 40


def test_send_from_many_threads(make_router: Any, plugin: Scripted) -> None:
    router = make_router({"a": dest()})
    results: list[bool] = []

    def worker() -> None:
        for _ in range(25):
            results.append(router.send(Event.track("X", user_id="u")).ok)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert results == [True] * 100


def test_close_stops_the_thread_and_refuses_more_sends(registry: PluginRegistry) -> None:
    before = {t.ident for t in threading.enumerate()}
    with Router({"a": dest()}, plugins=registry) as router:
        assert router.send(Event.track("X", user_id="u")).ok
    leaked = [t for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert [t.name for t in leaked if t.name == "event-router"] == []
    with pytest.raises(RouterClosedError):
        router.send(Event.track("X", user_id="u"))
    router.close()  # closing twice is harmless


def test_report_to_dict_is_json(make_router: Any) -> None:
    router = make_router({"a": dest(), "b": dest("permanent")})
    data = json.loads(json.dumps(router.send(Event.track("X", user_id="u")).to_dict()))
    assert data["ok"] is False
    assert data["results"]["a"]["success"] is True
    assert data["results"]["b"]["error"] == "HTTP 401"
    assert data["results"]["b"]["status_code"] == 401


def test_one_log_line_per_attempt_without_secrets(make_router: Any) -> None:
    stream = io.StringIO()
    configure_logging(format="json", level="debug", stream=stream)
    try:
        router = make_router(
            {
                "ok": dest(token="token-for-ok-1234"),
                "bad": dest("raise", token="token-for-bad-5678"),
                "flaky": dest("flaky", retry=FAST_RETRY, token="token-flaky-90"),
            }
        )
        router.send(Event.track("X", user_id="u"))
    finally:
        structlog.reset_defaults()
    output = stream.getvalue()
    lines = [json.loads(line) for line in output.splitlines()]
    attempts = [line for line in lines if line["event"] == "delivery_attempt"]
    by_destination = {(a["destination"], a["attempt"]): a for a in attempts}
    assert len(attempts) == 5  # ok:1, bad:1, flaky:3
    assert by_destination[("ok", 1)]["status"] == "delivered"
    assert by_destination[("ok", 1)]["plugin"] == "scripted"
    assert "duration_ms" in by_destination[("ok", 1)]
    assert by_destination[("flaky", 1)]["status"] == "retrying"
    assert by_destination[("flaky", 3)]["status"] == "delivered"
    assert by_destination[("bad", 1)]["status"] == "failed"
    assert "token-for-bad-5678" not in output
    assert "**********" in by_destination[("bad", 1)]["error"]


def test_settings_repr_hides_secrets(make_router: Any) -> None:
    router = make_router({"a": dest(token="hidden-token-value")})
    router.send(Event.track("X", user_id="u"))
    (_, destination) = router._targets[0]
    assert "hidden-token-value" not in repr(destination)
    assert "hidden-token-value" not in repr(router)
