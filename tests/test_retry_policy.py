"""Retries in direct mode: which answers are retried, backoff bounds, Retry-After, stable ids."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
import structlog

from router_core import Event, RetrySettings, Router
from router_core.errors import DeliveryError
from router_core.http import is_retryable_status, raise_for_status
from router_core.retry import backoff_delay, parse_retry_after

SEGMENT_BATCH = "https://api.segment.io/v1/batch"
WRITE_KEY = "wk_retry_test_0123456789"
FAST = {"backoff_base": 0.001, "backoff_max": 0.002, "retry_after_max": 0.01}


def segment_router(**retry: Any) -> Router:
    return Router(
        {
            "segment": {
                "plugin": "segment",
                "write_key": WRITE_KEY,
                "timeout": 2.0,
                "retry": {**FAST, **retry},
            }
        }
    )


@pytest.fixture
def router() -> Iterator[Router]:
    r = segment_router(max_attempts=4)
    yield r
    r.close()


def sent_messages(route: respx.Route) -> list[dict[str, Any]]:
    """The Segment messages of every request the route saw, in order."""
    messages = []
    for call in route.calls:
        body = json.loads(call.request.content)
        messages.extend(body["batch"])
    return messages


# -- backoff arithmetic ---------------------------------------------------------------------


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    policy = RetrySettings(backoff_base=0.5, backoff_max=8.0)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(policy, attempt, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        assert min(delays) < ceiling / 4 < ceiling * 3 / 4 < max(delays)


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetrySettings()
    first = [backoff_delay(policy, n, rng=random.Random(7)) for n in range(1, 6)]
    second = [backoff_delay(policy, n, rng=random.Random(7)) for n in range(1, 6)]
    assert first == second


@pytest.mark.parametrize(
    ("retry_after", "expected"), [(3.0, 3.0), (0.0, 0.0), (-5.0, 0.0), (1000.0, 60.0)]
)
def test_retry_after_wins_over_backoff_and_is_capped(retry_after: float, expected: float) -> None:
    policy = RetrySettings(backoff_base=100.0, backoff_max=100.0, retry_after_max=60.0)
    assert backoff_delay(policy, 5, retry_after, rng=random.Random(0)) == expected


def test_retry_after_header_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


# -- which answers are retried --------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retryable(status: int) -> None:
    response = httpx.Response(status, headers={"Retry-After": "7"}, request=_request())
    with pytest.raises(DeliveryError) as caught:
        raise_for_status(response)
    assert is_retryable_status(status)
    assert caught.value.retryable
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_client_errors_are_permanent(status: int) -> None:
    with pytest.raises(DeliveryError) as caught:
        raise_for_status(httpx.Response(status, request=_request()))
    assert not is_retryable_status(status)
    assert not caught.value.retryable


def _request() -> httpx.Request:
    return httpx.Request("POST", SEGMENT_BATCH)


# -- direct sends through the Segment plugin ------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 503])
def test_transient_failures_retry_with_the_same_message_id_and_timestamp(
    router: Router, status: int
) -> None:
    event = Event.track("Order Completed", user_id="u1", properties={"total": 5})
    with respx.mock(assert_all_called=True) as mock:
        route = mock.post(SEGMENT_BATCH).mock(
            side_effect=[httpx.Response(status), httpx.Response(status), httpx.Response(200)]
        )
        report = router.send(event)
    result = report.results["segment"]
    assert result.success
    assert result.attempts == 3
    messages = sent_messages(route)
    assert len(messages) == 3
    assert {m["messageId"] for m in messages} == {event.message_id}
    assert {m["timestamp"] for m in messages} == {event.timestamp.isoformat()}


@pytest.mark.parametrize("status", [400, 401, 403, 413])
def test_permanent_failures_are_never_retried(router: Router, status: int) -> None:
    with respx.mock() as mock:
        route = mock.post(SEGMENT_BATCH).mock(return_value=httpx.Response(status))
        report = router.send(Event.track("Signed Up", user_id="u1"))
    result = report.results["segment"]
    assert not result.success
    assert result.status_code == status
    assert result.attempts == 1
    assert route.call_count == 1


def test_retries_stop_after_max_attempts(router: Router) -> None:
    with respx.mock() as mock:
        route = mock.post(SEGMENT_BATCH).mock(return_value=httpx.Response(503))
        report = router.send(Event.track("Signed Up", user_id="u1"))
    result = report.results["segment"]
    assert not report.ok
    assert result.attempts == 4
    assert route.call_count == 4
    assert result.status_code == 503
    assert "503" in (result.error or "")


def test_network_errors_and_timeouts_are_retried(router: Router) -> None:
    event = Event.identify(user_id="u2", traits={"plan": "pro"})
    with respx.mock() as mock:
        route = mock.post(SEGMENT_BATCH).mock(
            side_effect=[
                httpx.ConnectError("refused"),
                httpx.ReadTimeout("slow"),
                httpx.Response(200, json={"success": True}),
            ]
        )
        report = router.send(event)
    assert report.results["segment"].attempts == 3
    assert report.ok
    assert {m["messageId"] for m in sent_messages(route)} == {event.message_id}


def test_retry_after_is_honoured_with_the_cap() -> None:
    router = segment_router(max_attempts=3, retry_after_max=0.05)
    try:
        with structlog.testing.capture_logs() as logs, respx.mock() as mock:
            mock.post(SEGMENT_BATCH).mock(
                side_effect=[
                    httpx.Response(429, headers={"Retry-After": "3600"}),
                    httpx.Response(200),
                ]
            )
            report = router.send(Event.track("Signed Up", user_id="u1"))
    finally:
        router.close()
    assert report.results["segment"].attempts == 2
    retrying = [e for e in logs if e.get("status") == "retrying"]
    assert [e["delay_s"] for e in retrying] == [0.05]
    assert retrying[0]["status_code"] == 429


def test_max_elapsed_bounds_the_retries() -> None:
    # The next wait (Retry-After, capped at 5 s) would pass max_elapsed: give up at once.
    router = segment_router(max_attempts=10, retry_after_max=5.0, max_elapsed=1.0)
    try:
        with respx.mock() as mock:
            route = mock.post(SEGMENT_BATCH).mock(
                return_value=httpx.Response(503, headers={"Retry-After": "5"})
            )
            report = router.send(Event.track("Signed Up", user_id="u1"))
    finally:
        router.close()
    assert report.results["segment"].attempts == 1
    assert route.call_count == 1
