"""Emulator and Sandbox lifecycle, recording helpers, and the read-only viewer."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from router_core.sandbox import PostHogEmulator, ReceivedEvent, Sandbox, SegmentEmulator

WRITE_KEY = "wk_life_0123456789abcdef"
API_KEY = "phc_life_0123456789abcdef"


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10.0) as c:
        yield c


def track(message_id: str, event: str = "Order Completed") -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": "u1", "messageId": message_id}


def send_segment(client: httpx.Client, url: str, *messages: dict[str, Any]) -> httpx.Response:
    return client.post(f"{url}/v1/batch", json={"batch": list(messages)}, auth=(WRITE_KEY, ""))


def send_posthog(client: httpx.Client, url: str, *names: str) -> httpx.Response:
    batch = [{"event": name, "distinct_id": "u1"} for name in names]
    return client.post(f"{url}/batch/", json={"api_key": API_KEY, "batch": batch})


def refuses_connections(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) != 0


def test_url_and_port_after_start() -> None:
    em = SegmentEmulator()
    with pytest.raises(RuntimeError, match="start"):
        _ = em.url
    em.start()
    try:
        assert em.url == f"http://127.0.0.1:{em.port}"
        assert em.port > 0
        assert em.running
    finally:
        em.stop()
    assert not em.running


def test_context_manager_stop_frees_the_port(no_leaked_threads: None, client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        port = em.port
        assert send_segment(client, em.url, track("m1")).status_code == 200
        # The client keeps its keep-alive connection open: stop() must close it anyway.

    assert refuses_connections(port)
    with SegmentEmulator(port=port) as again:  # the port can be bound again at once
        assert again.port == port
        assert send_segment(client, again.url, track("m2")).status_code == 200


def test_stop_is_idempotent_and_final() -> None:
    em = PostHogEmulator()
    em.start()
    em.stop()
    em.stop()

    with pytest.raises(RuntimeError, match="stopped"):
        em.start()


def test_stop_interrupts_a_request_held_by_latency(no_leaked_threads: None) -> None:
    em = SegmentEmulator()
    em.start()
    em.faults.set(latency=60.0)
    outcome: list[BaseException | int] = []

    def send() -> None:
        with httpx.Client(timeout=30.0) as own:
            try:
                outcome.append(send_segment(own, em.url, track("m1")).status_code)
            except httpx.TransportError as exc:
                outcome.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    assert _wait_until(lambda: em.requests == 1)
    em.stop()
    sender.join(30)

    assert not sender.is_alive()
    assert isinstance(outcome[0], httpx.TransportError)
    assert em.events == []


def _wait_until(condition: Any, attempts: int = 500) -> bool:
    stop = threading.Event()
    for _ in range(attempts):
        if condition():
            return True
        stop.wait(0.01)
    return False


def test_wait_for_returns_when_events_arrive(client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        url = em.url

        def later() -> None:
            with httpx.Client(timeout=10.0) as own:
                for i in range(3):
                    send_segment(own, url, track(f"m{i}"))

        sender = threading.Thread(target=later)
        sender.start()
        assert em.wait_for(3, timeout=10.0) is True
        sender.join(10)
        assert em.message_ids() == ["m0", "m1", "m2"]


def test_wait_for_gives_up_after_its_timeout(client: httpx.Client) -> None:
    with PostHogEmulator() as em:
        send_posthog(client, em.url, "one")

        assert em.wait_for(1, timeout=0.01) is True
        assert em.wait_for(2, timeout=0.05) is False


def test_message_ids_keep_duplicates_in_arrival_order(client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        send_segment(client, em.url, track("a"), track("b"))
        send_segment(client, em.url, track("a"))  # a retry of "a"

        assert em.message_ids() == ["a", "b", "a"]
        assert [e.request_id for e in em.events] == [1, 1, 2]


def test_events_is_a_snapshot(client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        send_segment(client, em.url, track("a"))
        snapshot = em.events
        snapshot.clear()
        payload = em.events[0].payload
        payload["event"] = "changed"

        assert em.message_ids() == ["a"]
        assert em.events[0].payload["event"] == "Order Completed"
        assert isinstance(em.events[0], ReceivedEvent)


def test_received_event_is_frozen(client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        send_segment(client, em.url, track("a"))
        event = em.events[0]

        with pytest.raises(AttributeError):
            event.message_id = "b"  # type: ignore[misc]


def test_reset_clears_events_counters_and_faults(client: httpx.Client) -> None:
    with PostHogEmulator() as em:
        send_posthog(client, em.url, "one", "two")
        em.faults.set(statuses=[503])

        em.reset()

        assert em.events == []
        assert em.requests == 0
        assert em.request_log == []
        assert em.faults.pending_statuses == ()
        assert send_posthog(client, em.url, "three").status_code == 200
        assert em.events[0].request_id == 1


def test_request_log_names_why_a_request_was_refused(client: httpx.Client) -> None:
    with SegmentEmulator() as em:
        send_segment(client, em.url, {"type": "track", "userId": "u"})
        log = client.get(f"{em.url}/_requests").json()

        assert log[0]["status"] == 400
        assert "track needs event" in log[0]["error"]
        assert em.request_log[0].events == 0


def test_keys_never_appear_in_views_logs_or_reprs(client: httpx.Client) -> None:
    with Sandbox() as sb:
        send_segment(client, sb.segment.url, track("a"))
        send_posthog(client, sb.posthog.url, "one")
        sb.segment.faults.set(statuses=[503])
        send_segment(client, sb.segment.url, track("b"))
        views = [
            client.get(f"{url}{path}").text
            for url in (sb.viewer_url, sb.segment.url, sb.posthog.url)
            for path in ("/", "/_events", "/_requests", "/_feed")
        ]
        texts = [*views, repr(sb), repr(sb.segment.events), repr(sb.posthog.request_log)]

        for text in texts:
            assert WRITE_KEY not in text
            assert API_KEY not in text
        assert sb.segment.events[0].key == "…cdef"


def test_sandbox_viewer_serves_both_vendors(no_leaked_threads: None) -> None:
    with Sandbox() as sb, httpx.Client(timeout=10.0) as client:
        send_segment(client, sb.segment.url, track("seg-1"))
        send_posthog(client, sb.posthog.url, "$pageview")

        feed = client.get(f"{sb.viewer_url}/_events").json()
        requests = client.get(f"{sb.viewer_url}/_requests").json()

        assert set(feed) == {"segment", "posthog"}
        assert [e["message_id"] for e in feed["segment"]] == ["seg-1"]
        assert [e["event"] for e in feed["posthog"]] == ["$pageview"]
        assert requests["segment"][0]["status"] == 200
        assert client.post(f"{sb.viewer_url}/_events", json={}).status_code == 405
        assert client.get(f"{sb.viewer_url}/nope").status_code == 404


def test_sandbox_stop_frees_every_port(no_leaked_threads: None) -> None:
    with Sandbox() as sb:
        ports = [sb.segment.port, sb.posthog.port, int(sb.viewer_url.rsplit(":", 1)[1])]

    assert all(refuses_connections(port) for port in ports)


def test_sandbox_without_viewer() -> None:
    with Sandbox(viewer_port=None) as sb:
        assert sb.segment.running
        with pytest.raises(RuntimeError, match="viewer"):
            _ = sb.viewer_url


def test_sandbox_passes_keys_to_the_emulators(client: httpx.Client) -> None:
    with Sandbox(write_keys={WRITE_KEY}, api_keys={"phc_other_key_000000000"}) as sb:
        assert send_segment(client, sb.segment.url, track("a")).status_code == 200
        assert send_posthog(client, sb.posthog.url, "one").status_code == 401


def test_serve_forever_returns_on_stop(no_leaked_threads: None) -> None:
    sb = Sandbox()
    server = threading.Thread(target=sb.serve_forever)
    server.start()
    assert _wait_until(lambda: sb.segment.running and sb.posthog.running)

    sb.stop()
    server.join(30)

    assert not server.is_alive()
    assert not sb.segment.running


def test_a_busy_port_stops_what_was_started(no_leaked_threads: None) -> None:
    with SegmentEmulator() as taken:
        sb = Sandbox(posthog_port=taken.port)
        with pytest.raises(OSError, match="in use"):
            sb.start()
        assert not sb.segment.running


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"write_keys": "one-key-as-a-string"}, TypeError),
        ({"write_keys": {""}}, TypeError),
        ({"port": -1}, ValueError),
        ({"port": 70000}, ValueError),
        ({"host": ""}, TypeError),
    ],
)
def test_bad_constructor_arguments_are_refused(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        SegmentEmulator(**kwargs)
