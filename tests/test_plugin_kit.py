"""The plugin kit: limits per destination, checked before any request, and the shared POST."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator, Iterator, Sequence
from types import ModuleType
from typing import Any

import httpx
import pytest
import respx

from router_core import (
    GZIP_LEVEL,
    USER_AGENT,
    BatchLimits,
    Delivery,
    DeliveryError,
    Destination,
    DestinationSettings,
    Event,
    PluginRegistry,
    Router,
    event_json,
    hookimpl,
    post_events,
)
from router_core.targets import Target
from router_core.testing import destination

URL = "https://hooks.example/in"


class PlanSettings(DestinationSettings):
    plan_batch: int = 100


def _planned_plugin(batches: list[int]) -> ModuleType:
    plugin = ModuleType("planned_plugin")

    @hookimpl
    def destination_settings() -> type[PlanSettings]:
        return PlanSettings

    @hookimpl
    def batch_limits(settings: PlanSettings) -> BatchLimits:
        return BatchLimits(max_events=settings.plan_batch)

    @hookimpl
    def send_event(destination: Destination[PlanSettings], event: Event) -> Delivery:
        batches.append(1)
        return Delivery()

    @hookimpl
    def send_batch(destination: Destination[PlanSettings], events: Sequence[Event]) -> Delivery:
        batches.append(len(events))
        return Delivery()

    for hook in (destination_settings, batch_limits, send_event, send_batch):
        setattr(plugin, hook.__name__, hook)
    return plugin


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(headers={"User-Agent": USER_AGENT}) as http:
        yield http


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def test_limits_are_asked_for_with_each_destinations_settings(client: httpx.AsyncClient) -> None:
    registry = PluginRegistry(entry_points=False)
    registry.register(_planned_plugin([]), "planned")
    plugin = registry.get("planned")
    small = Target(plugin, destination("planned", PlanSettings(plan_batch=3), client))
    large = Target(plugin, destination("planned", PlanSettings(plan_batch=50), client))
    assert small.limits == BatchLimits(max_events=3)
    assert large.limits == BatchLimits(max_events=50)


def test_a_settings_dependent_limit_returning_garbage_is_refused(
    client: httpx.AsyncClient,
) -> None:
    plugin = ModuleType("garbage_limits")

    @hookimpl
    def batch_limits(settings: DestinationSettings) -> Any:
        return {"max_events": 3}

    @hookimpl
    def send_event(destination: Destination[Any], event: Event) -> Delivery:
        return Delivery()

    plugin.batch_limits = batch_limits  # type: ignore[attr-defined]
    plugin.send_event = send_event  # type: ignore[attr-defined]
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "garbage")
    with pytest.raises(TypeError, match="batch_limits\\(\\) must return BatchLimits"):
        registry.get("garbage").limits_for(DestinationSettings())


def test_queued_delivery_batches_within_each_destinations_own_limits() -> None:
    batches: list[int] = []
    registry = PluginRegistry(entry_points=False)
    registry.register(_planned_plugin(batches), "planned")
    tables: dict[str, Any] = {"starter": {"plugin": "planned", "plan_batch": 2}}
    queue = {"backend": "memory", "flush_interval": 0.02, "batch_size": 100}
    with Router(tables, plugins=registry, queue=queue) as router:
        for n in range(7):
            router.send(Event.track(f"e{n}", user_id="u"))
        assert router.flush(timeout=30).complete
    assert sum(batches) == 7
    assert max(batches) <= 2


async def test_request_over_the_limit_is_refused_naming_the_limit(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = api.post(URL).respond(200)
    events = [Event.track("e", user_id="u", properties={"pad": "x" * 300}) for _ in range(3)]
    with pytest.raises(DeliveryError) as caught:
        await post_events(
            destination("hook", DestinationSettings(), client),
            events,
            url=URL,
            encode=event_json,
            vendor="Hook",
            limits=BatchLimits(max_request_bytes=1_000),
        )
    assert not route.called
    assert caught.value.retryable is False
    assert str(caught.value).startswith("Hook API error: batch request is ")
    assert str(caught.value).endswith("bytes, over Hook's 1 KB per-request limit")


async def test_event_over_the_limit_is_named(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = api.post(URL).respond(200)
    big = Event.track("big", user_id="u", message_id="m-big", properties={"pad": "x" * 600})
    with pytest.raises(
        DeliveryError, match=r"event 'm-big' is [0-9,]+ bytes, over Hook's 500-byte"
    ):
        await post_events(
            destination("hook", DestinationSettings(), client),
            [Event.track("small", user_id="u"), big],
            url=URL,
            encode=event_json,
            vendor="Hook",
            limits=BatchLimits(max_event_bytes=500),
        )
    assert not route.called


async def test_the_post_gzips_times_and_classifies(
    client: httpx.AsyncClient, api: respx.MockRouter
) -> None:
    route = api.post(URL).respond(503, headers={"Retry-After": "4"})
    event = Event.track("e", user_id="u")
    with pytest.raises(DeliveryError) as caught:
        await post_events(
            destination("hook", DestinationSettings(), client, timeout=3.5),
            [event],
            url=URL,
            encode=event_json,
            vendor="Hook",
            headers={"Authorization": "Bearer t"},
            gzip=True,
            output=lambda error: {"success": error is None, "error": error},
        )
    error = caught.value
    assert error.message == "Hook API error: HTTP 503"
    assert error.retryable is True
    assert error.retry_after == 4.0
    assert error.output == {"success": False, "error": "Hook API error: HTTP 503"}
    request = route.calls.last.request
    assert request.headers["content-encoding"] == "gzip"
    assert request.headers["authorization"] == "Bearer t"
    assert request.headers["user-agent"] == USER_AGENT
    assert request.extensions["timeout"]["read"] == 3.5
    assert gzip.decompress(request.content) == b"[" + event_json(event) + b"]"
    assert request.content == gzip.compress(
        b"[" + event_json(event) + b"]", compresslevel=GZIP_LEVEL, mtime=0
    )
