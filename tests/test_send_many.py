"""``send_many``: one request per vendor-limit chunk, splitting refused chunks, reports."""

from __future__ import annotations

import asyncio
import json
import math
import threading
from collections.abc import Iterator
from typing import Any

import event_router_posthog
import httpx
import pytest
import respx
from event_router_posthog.plugin import LIMITS

from router_core import (
    BatchReport,
    Delivery,
    DeliveryError,
    Destination,
    Event,
    InvalidEventError,
    PluginRegistry,
    Router,
    hookimpl,
)
from router_core.sandbox.posthog import PostHogEmulator

KEY = "phc_sendManyTestKey"
BATCH_URL = "https://us.i.posthog.com/batch/"
NO_RETRY = {"max_attempts": 1}


def posthog_registry() -> PluginRegistry:
    registry = PluginRegistry(entry_points=False)
    registry.register(event_router_posthog, "posthog")
    return registry


def events(count: int, name: str = "Order Completed") -> list[dict[str, Any]]:
    return [
        {"type": "track", "event": name, "user_id": f"u{i}", "properties": {"i": i}}
        for i in range(count)
    ]


@pytest.fixture
def posthog() -> Iterator[PostHogEmulator]:
    with PostHogEmulator(api_keys=[KEY]) as em:
        yield em


def posthog_router(host: str, **table: Any) -> Router:
    config = {"plugin": "posthog", "api_key": KEY, "host": host, "retry": NO_RETRY, **table}
    return Router({"posthog": config}, plugins=posthog_registry())


@pytest.mark.parametrize("count", [1, 3, 1000, 2500])
def test_posthog_multiple_events_batched_together(posthog: PostHogEmulator, count: int) -> None:
    # PostHog's SDK compliance test "multiple events batched together", in direct mode.
    with posthog_router(posthog.url) as router:
        batch = router.send_many(events(count))

    assert batch.ok
    assert len(batch.reports) == count
    limit = LIMITS.max_events
    assert posthog.requests == math.ceil(count / limit)
    assert {r.path for r in posthog.request_log} == {"/batch/"}
    uuids = posthog.message_ids()
    assert len(set(uuids)) == count
    assert sorted(uuids) == sorted(r.message_id for r in batch.reports)


def test_chunks_follow_the_request_byte_limit(posthog: PostHogEmulator) -> None:
    # Each event is about 300 KB: a 20 MB request holds about 60 of them, not 1000.
    big = [
        {"type": "track", "event": "Big", "user_id": f"u{i}", "properties": {"blob": "x" * 300_000}}
        for i in range(150)
    ]
    with posthog_router(posthog.url, gzip=False) as router:
        batch = router.send_many(big)

    assert batch.ok, batch.failed[:1]
    assert 3 <= posthog.requests <= 4
    assert len(posthog.events) == 150


def test_reports_come_back_in_input_order_with_results_per_destination() -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(BATCH_URL).respond(200, json={"status": "Ok"})
        with Router(
            {
                "a": {"plugin": "posthog", "api_key": KEY, "retry": NO_RETRY},
                "b": {"plugin": "posthog", "api_key": KEY, "retry": NO_RETRY},
            },
            plugins=posthog_registry(),
        ) as router:
            sent = [Event.parse(e) for e in events(5)]
            batch = router.send_many(sent)

    assert isinstance(batch, BatchReport)
    assert [r.message_id for r in batch.reports] == [e.message_id for e in sent]
    assert all(list(r.results) == ["a", "b"] for r in batch.reports)
    assert batch.counts() == {
        "a": {"delivered": 5, "failed": 0, "skipped": 0, "queued": 0, "disabled": 0},
        "b": {"delivered": 5, "failed": 0, "skipped": 0, "queued": 0, "disabled": 0},
    }
    assert batch.to_dict()["events"] == 5
    assert route.call_count == 2  # one request per destination


def test_an_invalid_event_names_its_index_and_nothing_is_sent() -> None:
    bad = events(4)
    bad[2] = {"type": "track", "user_id": "u2"}  # no event name
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(BATCH_URL).respond(200, json={"status": "Ok"})
        with (
            posthog_router("https://us.i.posthog.com") as router,
            pytest.raises(InvalidEventError) as caught,
        ):
            router.send_many(bad)

    assert "event 2" in str(caught.value)
    assert any(where.startswith("[2].event") for where, _ in caught.value.problems)
    assert not route.called


def test_a_refused_chunk_is_split_to_find_the_event_at_fault() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        names = [e["event"] for e in json.loads(request.content)["batch"]]
        if "Poison" in names:
            return httpx.Response(400, json={"type": "validation_error"})
        return httpx.Response(200, json={"status": "Ok"})

    sent = events(8)
    sent[5]["event"] = "Poison"
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(BATCH_URL).mock(side_effect=answer)
        with posthog_router("https://us.i.posthog.com", gzip=False) as router:
            batch = router.send_many(sent)

    assert [r.ok for r in batch.reports] == [i != 5 for i in range(8)]
    failed = batch.reports[5].results["posthog"]
    assert failed.status_code == 400
    # 8 -> 4+4 -> (4 ok) 2+2 -> (2 ok) 1+1: seven requests, each event delivered once.
    assert route.call_count == 7
    delivered = [
        e["properties"]["i"]
        for call in route.calls
        if call.response.status_code == 200
        for e in json.loads(call.request.content)["batch"]
    ]
    assert sorted(delivered) == [0, 1, 2, 3, 4, 6, 7]


def test_a_transient_failure_is_retried_then_the_rest_is_not_tried() -> None:
    with respx.mock(assert_all_called=False) as mock:
        route = mock.post(BATCH_URL).respond(503)
        retry = {"max_attempts": 2, "backoff_base": 0.001, "backoff_max": 0.002}
        with posthog_router("https://us.i.posthog.com", retry=retry) as router:
            batch = router.send_many(events(2500))

    assert not batch.ok
    assert route.call_count == 2  # the first chunk, twice; the two others never
    first, last = batch.reports[0].results["posthog"], batch.reports[-1].results["posthog"]
    assert first.status_code == 503
    assert first.attempts == 2
    assert last.error is not None
    assert "not sent" in last.error


class Each:
    """A plugin without send_batch that records how many sends overlap."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0
        self.seen: list[str] = []

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        await asyncio.sleep(0.001)
        with self.lock:
            self.active -= 1
            self.seen.append(event.message_id)
        if event.event == "Refused":
            raise DeliveryError("refused", status_code=422)
        return Delivery(status_code=200)


def test_plugins_without_send_batch_get_one_send_event_each_bounded() -> None:
    plugin = Each()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "each")
    sent = events(60)
    sent[7]["event"] = "Refused"
    with Router({"each": {"plugin": "each", "retry": NO_RETRY}}, plugins=registry) as router:
        batch = router.send_many(sent)

    assert sorted(plugin.seen) == sorted(r.message_id for r in batch.reports)
    assert 1 <= plugin.most <= 10
    assert [r.ok for r in batch.reports] == [i != 7 for i in range(60)]
    assert batch.failed[0].results["each"].status_code == 422


def test_filters_are_applied_per_event() -> None:
    plugin = Each()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "each")
    table = {"plugin": "each", "retry": NO_RETRY, "events": ["Kept"]}
    with Router({"each": table}, plugins=registry) as router:
        batch = router.send_many(events(3, "Kept") + events(2, "Dropped"))

    assert [r.skipped for r in batch.reports] == [(), (), (), ("each",), ("each",)]
    assert len(plugin.seen) == 3
    assert batch.ok


def test_asend_many_from_asyncio(posthog: PostHogEmulator) -> None:
    async def main() -> BatchReport:
        with posthog_router(posthog.url) as router:
            return await router.asend_many(events(5))

    batch = asyncio.run(main())
    assert batch.ok
    assert posthog.requests == 1


def test_queued_send_many_enqueues_each_event() -> None:
    plugin = Each()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "each")
    with Router(
        {"each": {"plugin": "each"}}, plugins=registry, queue={"backend": "memory"}
    ) as router:
        batch = router.send_many(events(4))
        assert all(r.queued and r.queued_for == ("each",) for r in batch.reports)
        assert router.flush(timeout=10).complete
    assert len(plugin.seen) == 4


class BatchRecorder:
    """A destination plugin that records each batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.batches.append([event])
        return Delivery(200)

    @hookimpl
    async def send_batch(self, destination: Destination[Any], events: list[Event]) -> Delivery:
        self.batches.append(list(events))
        return Delivery(200)


def test_send_many_routes_and_transforms_as_send_does() -> None:
    raw, scrubbed = BatchRecorder(), BatchRecorder()
    registry = PluginRegistry(entry_points=False)
    registry.register(raw, "raw")
    registry.register(scrubbed, "scrubbed")
    destinations: dict[str, dict[str, Any]] = {
        "raw": {"plugin": "raw"},
        "scrubbed": {
            "plugin": "scrubbed",
            "transforms": [
                {"type": "drop", "paths": ["properties.card_*"]},
                {"type": "drop_events", "events": ["Debug *"]},
            ],
        },
    }
    sent = [
        Event.track("Order Completed", user_id="u1", properties={"card_last4": "4242", "n": 1}),
        Event.track("Debug Ping", user_id="u2"),
        Event.track("Signed Up", user_id="u3", integrations={"scrubbed": False}),
    ]
    with Router(destinations, plugins=registry) as router:
        batch = router.send_many(sent)
        single = router.send(sent[0])
    assert batch.ok
    # Each destination got one request holding what its own routing and transforms let through.
    assert [[e.message_id for e in b] for b in raw.batches[:1]] == [[e.message_id for e in sent]]
    first = scrubbed.batches[0]
    assert [e.message_id for e in first] == [sent[0].message_id]
    assert first[0].properties == {"n": 1}
    assert batch.reports[1].skip_reasons == {"scrubbed": "dropped by transform drop_events"}
    assert batch.reports[2].skip_reasons == {"scrubbed": "integrations"}
    assert batch.reports[0].skip_reasons == {}
    # The same event sent alone reaches the scrubbed destination in the same shape.
    assert scrubbed.batches[-1][0].properties == first[0].properties
    assert single.ok
