"""Queued delivery end to end: real plugins, emulators over loopback, faults injected."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog

from router_core import Delivery, Destination, Event, InvalidEventError, Router, hookimpl
from router_core.errors import DeliveryError
from router_core.outbox import QueueSettings
from router_core.plugins import PluginRegistry
from router_core.sandbox import PostHogEmulator, SegmentEmulator
from router_core.sandbox.emulator import Emulator, IncomingRequest
from router_core.sandbox.records import ReceivedEvent

WRITE_KEY = "wk_queue_test_0123456789"
API_KEY = "phc_queue_test_0123456789"
FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.05, "retry_after_max": 1.0}
WAIT = 30.0  # generous bound on every flush; tests finish far sooner


@pytest.fixture
def segment() -> Iterator[SegmentEmulator]:
    with SegmentEmulator() as em:
        yield em


@pytest.fixture
def posthog() -> Iterator[PostHogEmulator]:
    with PostHogEmulator() as em:
        yield em


def queue_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "path": str(tmp_path / "outbox.db"),
        "batch_size": 20,
        "flush_interval": 0.02,
        "lease": 5.0,
        "close_timeout": 5.0,
        "retry": {**FAST_RETRY, "max_attempts": 200},
    }
    settings.update(overrides)
    return settings


def destinations(
    segment: Emulator | None = None,
    posthog: Emulator | None = None,
    *,
    segment_opts: Mapping[str, Any] | None = None,
    posthog_opts: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    tables: dict[str, dict[str, Any]] = {}
    if segment is not None:
        tables["segment"] = {
            "plugin": "segment",
            "write_key": WRITE_KEY,
            "host": segment.url,
            "timeout": 2.0,
            **(segment_opts or {}),
        }
    if posthog is not None:
        tables["posthog"] = {
            "plugin": "posthog",
            "api_key": API_KEY,
            "host": posthog.url,
            "timeout": 2.0,
            **(posthog_opts or {}),
        }
    return tables


def track(i: int) -> Event:
    return Event.track("Order Completed", user_id=f"user_{i}", properties={"n": i})


def send_all(router: Router, count: int) -> list[str]:
    return [router.send(track(i)).message_id for i in range(count)]


# -- the basics -----------------------------------------------------------------------------


def test_send_records_the_event_and_the_worker_delivers_it(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    with Router(destinations(segment, posthog), queue=queue_settings(tmp_path)) as router:
        report = router.send(track(1))
        assert report.queued
        assert report.ok
        assert dict(report.results) == {}
        assert report.skipped == ()
        accepted = [report.message_id, *send_all(router, 49)]
        result = router.flush(timeout=WAIT)
        assert result.complete
        assert not result.timed_out
        assert result.pending == {"segment": 0, "posthog": 0}
        assert result.dead == {"segment": 0, "posthog": 0}
    for em in (segment, posthog):
        assert sorted(em.message_ids()) == sorted(accepted)


def test_the_stored_event_keeps_its_id_and_timestamp(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    event = Event.track("Order Completed", user_id="u1", timestamp="2024-05-01T10:00:00+02:00")
    with Router(destinations(segment), queue=queue_settings(tmp_path)) as router:
        router.send(event)
        assert router.flush(timeout=WAIT).complete
    (received,) = segment.events
    assert received.message_id == event.message_id
    assert '"timestamp":"2024-05-01T08:00:00+00:00"' in received.payload_json


def test_invalid_events_are_refused_before_anything_is_stored(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    with Router(destinations(segment), queue=queue_settings(tmp_path)) as router:
        with pytest.raises(InvalidEventError, match="event"):
            router.send({"type": "track", "user_id": "u1"})
        assert router.outbox is not None
        assert router.outbox.stats(time.time()).events == 0


def test_filters_decide_which_destinations_get_a_row(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    tables = destinations(segment, posthog, posthog_opts={"events": ["Order*"]})
    with Router(tables, queue=queue_settings(tmp_path)) as router:
        signed_up = router.send(Event.track("Signed Up", user_id="u1"))
        ordered = router.send(track(2))
        assert signed_up.skipped == ("posthog",)
        assert ordered.skipped == ()
        assert router.flush(timeout=WAIT).complete
    assert sorted(segment.message_ids()) == sorted([signed_up.message_id, ordered.message_id])
    assert posthog.message_ids() == [ordered.message_id]


def test_queue_from_the_config_file(tmp_path: Path, segment: SegmentEmulator) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        f"""
[queue]
path = "{tmp_path / "from-config.db"}"
batch_size = 5
flush_interval = 0.02

[destinations.segment]
plugin = "segment"
write_key = "{WRITE_KEY}"
host = "{segment.url}"
""",
        encoding="utf-8",
    )
    with Router.from_config(config) as router:
        assert router.queued
        assert router.queue_settings is not None
        assert router.queue_settings.batch_size == 5
        accepted = send_all(router, 12)
        assert router.flush(timeout=WAIT).complete
    assert (tmp_path / "from-config.db").exists()
    assert sorted(segment.message_ids()) == sorted(accepted)
    # Requests were batched, at most batch_size events each.
    assert all(r.events <= 5 for r in segment.request_log)


def test_enabled_false_means_direct_delivery(tmp_path: Path, segment: SegmentEmulator) -> None:
    with Router(destinations(segment), queue={"enabled": False}) as router:
        report = router.send(track(1))
        assert not router.queued
        assert not report.queued
        assert report.results["segment"].success
        assert router.flush().complete


async def test_asend_and_aflush_from_asyncio(tmp_path: Path, segment: SegmentEmulator) -> None:
    with Router(destinations(segment), queue=queue_settings(tmp_path)) as router:
        reports = await asyncio.gather(*(router.asend(track(i)) for i in range(20)))
        assert all(r.queued for r in reports)
        result = await router.aflush(timeout=WAIT)
        assert result.complete
    assert sorted(segment.message_ids()) == sorted(r.message_id for r in reports)


def test_many_threads_sending_at_once(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    accepted: list[str] = []
    lock = threading.Lock()

    def producer(base: int) -> None:
        ids = [router.send(track(base + i)).message_id for i in range(40)]
        with lock:
            accepted.extend(ids)

    with Router(destinations(segment, posthog), queue=queue_settings(tmp_path)) as router:
        threads = [threading.Thread(target=producer, args=(n * 1000,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert router.flush(timeout=WAIT).complete
    assert len(accepted) == 320
    for em in (segment, posthog):
        assert Counter(em.message_ids()) == Counter(accepted)


def test_memory_backend_delivers_the_same_way(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    settings = QueueSettings(backend="memory", flush_interval=0.02, batch_size=7)
    with Router(destinations(segment, posthog), queue=settings) as router:
        accepted = send_all(router, 30)
        assert router.flush(timeout=WAIT).complete
    assert not (tmp_path / "outbox.db").exists()
    for em in (segment, posthog):
        assert sorted(em.message_ids()) == sorted(accepted)


def test_memory_backend_says_what_close_could_not_deliver(segment: SegmentEmulator) -> None:
    segment.faults.set(statuses=[503] * 1000)
    settings = {"backend": "memory", "close_timeout": 0.2, "retry": FAST_RETRY}
    with structlog.testing.capture_logs() as logs:
        router = Router(destinations(segment), queue=settings)
        send_all(router, 3)
        router.close()
    (lost,) = [e for e in logs if e["event"] == "outbox_events_lost"]
    assert lost["pending"] == {"segment": 3}


# -- faults ---------------------------------------------------------------------------------


class FaultDriver(threading.Thread):
    """Alternates faults and healthy stretches on an emulator, by request count.

    Each cycle: the next two requests fail (503s, dropped connections, answers slower than
    the destination's timeout, or other 5xx), then two requests are handled normally.
    """

    def __init__(self, em: Emulator, slow: float) -> None:
        super().__init__(name="fault-driver", daemon=True)
        self.em = em
        self.slow = slow
        self.done = threading.Event()
        self.kinds: Counter[str] = Counter()

    def run(self) -> None:
        faults = self.em.faults
        for kind in itertools.cycle(["503", "drop", "slow", "5xx"]):
            if self.done.is_set():
                break
            seen = self.em.requests
            if kind == "503":
                faults.set(statuses=[503, 503])
            elif kind == "drop":
                faults.set(drop_connections=2)
            elif kind == "slow":
                faults.set(latency=self.slow)
            else:
                faults.set(statuses=[500, 504])
            if self._until(seen + 2):
                self.kinds[kind] += 1
            faults.clear()
            self._until(self.em.requests + 2)
        self.em.faults.clear()

    def _until(self, requests: int) -> bool:
        while self.em.requests < requests:
            if self.done.wait(0.002):
                return False
        return True

    def stop(self) -> None:
        self.done.set()
        self.join(5)


def test_a_flaky_destination_still_gets_everything_and_the_healthy_one_once(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    timeout = 0.3
    tables = destinations(segment, posthog, posthog_opts={"timeout": timeout})
    driver = FaultDriver(posthog, slow=timeout * 3)
    driver.start()
    try:
        with Router(tables, queue=queue_settings(tmp_path, batch_size=10)) as router:
            accepted = []
            for _ in range(20):
                accepted += send_all(router, 15)
                time.sleep(0.01)  # let batches go out while faults are active
            result = router.flush(timeout=WAIT)
    finally:
        driver.stop()
    assert result.complete, result
    assert result.dead == {"segment": 0, "posthog": 0}
    # Every fault kind actually happened.
    assert set(driver.kinds) == {"503", "drop", "slow", "5xx"}
    # The flaky destination got every accepted event (timed-out requests may land twice)...
    assert set(posthog.message_ids()) == set(accepted)
    # ... and the healthy one got each exactly once: its acknowledgments are its own.
    counts = Counter(segment.message_ids())
    assert set(counts) == set(accepted)
    assert set(counts.values()) == {1}


def test_429_retry_after_is_honoured_and_capped(tmp_path: Path, segment: SegmentEmulator) -> None:
    segment.faults.set(statuses=[429, 429], retry_after=3600)
    settings = queue_settings(tmp_path, retry={**FAST_RETRY, "retry_after_max": 0.2})
    with (
        structlog.testing.capture_logs() as logs,
        Router(destinations(segment), queue=settings) as router,
    ):
        accepted = send_all(router, 5)
        result = router.flush(timeout=WAIT)
    assert result.complete
    assert sorted(segment.message_ids()) == sorted(accepted)
    scheduled = [e for e in logs if e["event"] == "outbox_retry_scheduled"]
    assert [e["status_code"] for e in scheduled] == [429, 429]
    assert [e["delay_s"] for e in scheduled] == [0.2, 0.2]


def test_retry_after_below_the_cap_is_used_as_sent(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    segment.faults.set(statuses=[503], retry_after=0.1)
    with (
        structlog.testing.capture_logs() as logs,
        Router(destinations(segment), queue=queue_settings(tmp_path)) as router,
    ):
        send_all(router, 3)
        assert router.flush(timeout=WAIT).complete
    scheduled = [e for e in logs if e["event"] == "outbox_retry_scheduled"]
    assert [e["delay_s"] for e in scheduled] == [0.1]


def test_one_destination_down_for_long_does_not_hold_up_the_other(
    tmp_path: Path, segment: SegmentEmulator, posthog: PostHogEmulator
) -> None:
    # PostHog drops connections, then answers 503, until the test lets it recover.
    posthog.faults.set(statuses=[503] * 100_000, drop_connections=10)
    with Router(destinations(segment, posthog), queue=queue_settings(tmp_path)) as router:
        accepted = send_all(router, 100)
        # Segment receives everything while PostHog is down.
        assert segment.wait_for(100, timeout=WAIT)
        store = router.outbox
        assert store is not None
        while posthog.requests < 30:  # PostHog keeps being retried meanwhile
            time.sleep(0.01)
        assert posthog.message_ids() == []
        assert store.pending(["segment", "posthog"]) == {"segment": 0, "posthog": 100}
        posthog.faults.clear()  # back up
        result = router.flush(timeout=WAIT)
    assert result.complete
    assert result.dead == {"segment": 0, "posthog": 0}
    assert Counter(segment.message_ids()) == Counter(accepted)
    assert set(posthog.message_ids()) == set(accepted)


def test_retries_run_out_into_the_dead_letter(tmp_path: Path, segment: SegmentEmulator) -> None:
    segment.faults.set(statuses=[503] * 1000)
    settings = queue_settings(tmp_path, retry={**FAST_RETRY, "max_attempts": 3})
    with Router(destinations(segment), queue=settings) as router:
        send_all(router, 4)
        result = router.flush(timeout=WAIT)
        assert router.outbox is not None
        stats = router.outbox.stats(time.time())
    assert result.complete  # nothing pending: everything is delivered or dead
    assert result.dead == {"segment": 4}
    assert stats.counts == {"segment": {"dead": 4}}
    assert segment.message_ids() == []


def test_backoff_keeps_growing_through_an_outage(tmp_path: Path, segment: SegmentEmulator) -> None:
    # Rows die after 3 attempts, and newer rows come up: the destination's backoff does not
    # start over with them (a down destination is probed less and less often).
    segment.faults.set(statuses=[503] * 1000)
    retry = {"backoff_base": 0.001, "backoff_max": 0.01, "max_attempts": 3}
    settings = queue_settings(tmp_path, batch_size=2, flush_interval=1.0, retry=retry)
    with (
        structlog.testing.capture_logs() as logs,
        Router(destinations(segment), queue=settings) as router,
    ):
        send_all(router, 6)
        result = router.flush(timeout=WAIT)
    assert result.dead == {"segment": 6}
    attempts = [e["attempt"] for e in logs if e["event"] == "outbox_retry_scheduled"]
    assert attempts == list(range(1, 10))


class RecordingSegment(SegmentEmulator):
    """Remembers each request's Content-Encoding."""

    def __init__(self) -> None:
        super().__init__()
        self.encodings: list[str] = []

    def ingest(self, request: IncomingRequest) -> list[ReceivedEvent]:
        self.encodings.append(request.headers.get("Content-Encoding", ""))
        return super().ingest(request)


def test_gzip_bodies_when_enabled(tmp_path: Path, posthog: PostHogEmulator) -> None:
    with RecordingSegment() as segment:
        tables = destinations(
            segment, posthog, segment_opts={"gzip": True}, posthog_opts={"gzip": True}
        )
        with Router(tables, queue=queue_settings(tmp_path)) as router:
            accepted = send_all(router, 40)
            assert router.flush(timeout=WAIT).complete
        assert segment.encodings
        assert set(segment.encodings) == {"gzip"}
        assert sorted(segment.message_ids()) == sorted(accepted)
    assert sorted(posthog.message_ids()) == sorted(accepted)


# -- batches refused permanently are split ----------------------------------------------------


def test_an_oversized_event_is_isolated_and_the_rest_delivered(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    settings = queue_settings(tmp_path, batch_size=50, flush_interval=1.0)
    with Router(destinations(segment), queue=settings) as router:
        good = send_all(router, 10)
        # Stored at under 32 KB but over Segment's per-event limit once encoded.
        big = router.send(Event.track("Big", user_id="u", properties={"blob": "x" * 31_900}))
        good += send_all(router, 10)
        result = router.flush(timeout=WAIT)
        assert router.outbox is not None
        stats = router.outbox.stats(time.time())
    assert result.dead == {"segment": 1}
    assert stats.counts == {"segment": {"dead": 1}}
    assert sorted(segment.message_ids()) == sorted(good)
    assert big.message_id not in segment.message_ids()


def test_a_batch_answered_400_is_split_and_delivered(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    segment.faults.set(statuses=[400])
    settings = queue_settings(tmp_path, batch_size=50, flush_interval=1.0)
    with Router(destinations(segment), queue=settings) as router:
        accepted = send_all(router, 8)
        result = router.flush(timeout=WAIT)
    assert result.complete
    assert result.dead == {"segment": 0}
    assert Counter(segment.message_ids()) == Counter(accepted)
    assert len(segment.request_log) >= 3  # the refused batch, then its halves


# -- plugins without send_batch -------------------------------------------------------------


class OneByOne:
    """A plugin without send_batch: refuses events whose user_id starts with "bad"."""

    def __init__(self) -> None:
        self.delivered: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            if (event.user_id or "").startswith("bad"):
                raise DeliveryError("HTTP 400", status_code=400)
            self.delivered.append(event.message_id)
            return Delivery(status_code=200)
        finally:
            self.in_flight -= 1


def test_without_send_batch_events_go_one_by_one_concurrently(tmp_path: Path) -> None:
    plugin = OneByOne()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "one-by-one")
    settings = queue_settings(tmp_path, concurrency=4, batch_size=40, flush_interval=0.5)
    with Router({"hook": {"plugin": "one-by-one"}}, plugins=registry, queue=settings) as router:
        good = send_all(router, 30)
        bad = router.send(Event.track("E", user_id="bad_1")).message_id
        result = router.flush(timeout=WAIT)
    assert sorted(plugin.delivered) == sorted(good)
    assert result.dead == {"hook": 1}
    assert bad not in plugin.delivered
    assert 1 < plugin.most_in_flight <= 4


# -- flush and close ------------------------------------------------------------------------


def test_flush_timeout_reports_what_is_left(tmp_path: Path, segment: SegmentEmulator) -> None:
    segment.faults.set(statuses=[503] * 10_000)
    settings = queue_settings(tmp_path, retry={**FAST_RETRY, "max_attempts": 10_000})
    router = Router(destinations(segment), queue=settings)
    try:
        accepted = send_all(router, 6)
        result = router.flush(timeout=0.3)
    finally:
        segment.faults.clear()
        router.close()  # drains: the destination answers again
    assert result.timed_out
    assert not result.complete
    assert result.pending == {"segment": 6}
    assert result.dead == {"segment": 0}
    assert sorted(segment.message_ids()) == sorted(accepted)


def test_close_drains_and_a_new_router_delivers_what_was_left(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    segment.faults.set(statuses=[503] * 10_000)
    first = Router(destinations(segment), queue=queue_settings(tmp_path, close_timeout=0.1))
    accepted = send_all(first, 25)
    first.close()
    assert segment.message_ids() == []
    segment.faults.clear()
    with Router(destinations(segment), queue=queue_settings(tmp_path)) as second:
        assert second.flush(timeout=WAIT).complete
    assert sorted(segment.message_ids()) == sorted(accepted)


def test_close_delivers_everything_accepted(tmp_path: Path, segment: SegmentEmulator) -> None:
    router = Router(destinations(segment), queue=queue_settings(tmp_path, flush_interval=5.0))
    accepted = send_all(router, 10)
    router.close()
    assert sorted(segment.message_ids()) == sorted(accepted)


def _threads() -> set[str]:
    # The emulator's own connection threads wind down on their own schedule: not ours.
    return {t.name for t in threading.enumerate() if not t.name.startswith("sandbox-")}


def _open_files() -> set[str]:
    import os

    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            found.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
    return found


def test_no_threads_or_connections_outlive_the_router(
    tmp_path: Path, segment: SegmentEmulator
) -> None:
    threads_before = _threads()
    for _ in range(3):
        with Router(destinations(segment), queue=queue_settings(tmp_path)) as router:
            send_all(router, 5)
            assert router.flush(timeout=WAIT).complete
            assert "event-router" in _threads()  # the router's loop thread, while it runs
            assert [f for f in _open_files() if f.endswith("outbox.db")]
    leftover = _threads() - threads_before
    assert leftover == set()
    assert not [f for f in _open_files() if str(tmp_path) in f]
    assert sorted(Counter(segment.message_ids()).values()) == [1] * 15


def test_send_after_close_is_refused(tmp_path: Path, segment: SegmentEmulator) -> None:
    from router_core import RouterClosedError

    router = Router(destinations(segment), queue=queue_settings(tmp_path))
    router.close()
    with pytest.raises(RouterClosedError):
        router.send(track(1))
    with pytest.raises(RouterClosedError):
        router.flush()
