"""Retries in direct mode: which answers are retried, backoff bounds, Retry-After, stable ids."""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
import structlog

from router_core import ConfigError, Event, QueueRetrySettings, RetrySettings, Router
from router_core.errors import DeliveryError
from router_core.http import is_retryable_status, raise_for_status
from router_core.retry import (
    RETRY_AFTER_LIMIT_S,
    backoff_delay,
    parse_retry_after,
    retry_after_seconds,
)

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


def test_full_jitter_stays_between_the_floor_and_the_exponential_ceiling() -> None:
    policy = RetrySettings(backoff_base=0.5, backoff_max=8.0)
    rng = random.Random(1234)
    for attempt in range(1, 12):
        ceiling = min(8.0, 0.5 * 2 ** (attempt - 1))
        delays = [backoff_delay(policy, attempt, rng=rng) for _ in range(200)]
        assert all(0.1 <= d <= ceiling for d in delays)
        # Full jitter spreads over the whole range, not just near the ceiling.
        span = ceiling - 0.1
        assert min(delays) < 0.1 + span / 4 < 0.1 + span * 3 / 4 < max(delays)


@pytest.mark.parametrize("policy", [RetrySettings(), QueueRetrySettings()], ids=["direct", "queue"])
def test_the_first_retry_waits_at_least_100_ms(policy: RetrySettings) -> None:
    # PostHog's SDK compliance contract: never retry sooner than 100 ms. Full jitter from 0
    # broke it about one time in five.
    rng = random.Random(99)
    delays = [backoff_delay(policy, 1, rng=rng) for _ in range(5000)]
    assert min(delays) >= 0.1
    assert max(delays) <= policy.backoff_base


def test_the_floor_gives_way_to_a_smaller_backoff_max() -> None:
    policy = RetrySettings(backoff_max=0.01)  # the default floor (0.1 s) is not asked for
    rng = random.Random(3)
    assert all(0.0 <= backoff_delay(policy, n, rng=rng) <= 0.01 for n in range(1, 50))
    floored = RetrySettings(backoff_min=0.5, backoff_base=0.0, backoff_max=0.5)
    assert backoff_delay(floored, 1, rng=rng) == 0.5


def test_a_floor_above_the_ceiling_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"destinations\.segment\.retry: backoff_min \(5\)"):
        segment_router(backoff_min=5.0, backoff_max=1.0)


@pytest.mark.parametrize("key", ["backoff_min", "backoff_base", "backoff_max", "retry_after_max"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_backoff_settings_are_config_errors(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=rf"destinations\.segment\.retry\.{key}: .*finite"):
        segment_router(**{key: value})


def test_backoff_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetrySettings()
    first = [backoff_delay(policy, n, rng=random.Random(7)) for n in range(1, 6)]
    second = [backoff_delay(policy, n, rng=random.Random(7)) for n in range(1, 6)]
    assert first == second


@pytest.mark.parametrize("attempt", [-5, 0, 1023, 1024, 1025, 10**6, sys.maxsize, 10**400])
@pytest.mark.parametrize("base", [0.0, 1.0, 1e308])
def test_backoff_never_overflows(attempt: int, base: float) -> None:
    # 2 ** 1024 overflows a float: past 1,024 failures every reschedule used to raise.
    policy = QueueRetrySettings(backoff_base=base, backoff_max=300.0)
    delay = backoff_delay(policy, attempt, rng=random.Random(attempt % 1000))
    assert 0.1 <= delay <= 300.0
    if base == 1.0 and attempt > 100:
        assert delay > 0.1  # the ceiling is backoff_max, not a collapsed or broken value


@pytest.mark.parametrize(
    ("retry_after", "at_least", "at_most"),
    [
        (3.0, 3.0, 100.0),  # a minimum: the jittered backoff may be longer
        (0.0, 0.1, 100.0),  # "now" still waits the floor
        (-5.0, 0.1, 100.0),
        (1000.0, 60.0, 100.0),  # capped at retry_after_max
        (math.inf, 60.0, 100.0),
        (math.nan, 0.1, 100.0),  # no usable answer: the backoff alone
        (10**400, 60.0, 100.0),
    ],
)
def test_retry_after_is_a_capped_minimum(
    retry_after: float, at_least: float, at_most: float
) -> None:
    policy = RetrySettings(backoff_base=100.0, backoff_max=100.0, retry_after_max=60.0)
    rng = random.Random(0)
    delays = [backoff_delay(policy, 5, retry_after, rng=rng) for _ in range(200)]
    assert all(at_least <= d <= at_most for d in delays)
    assert max(delays) > 60.0  # the jitter is kept above the server's minimum


def test_retry_after_replaces_a_shorter_backoff() -> None:
    policy = RetrySettings(backoff_base=0.001, backoff_max=0.002, retry_after_max=60.0)
    assert backoff_delay(policy, 1, 3.0, rng=random.Random(0)) == 3.0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7, 7.0),
        (1.5, 1.5),
        (-1, 0.0),
        (-0.0, 0.0),
        (math.nan, None),
        (math.inf, RETRY_AFTER_LIMIT_S),
        (-math.inf, 0.0),
        (10**400, RETRY_AFTER_LIMIT_S),
        (-(10**400), 0.0),
        ("5", None),
        (True, None),
        (None, None),
    ],
)
def test_retry_after_from_a_plugin_is_made_safe(value: object, expected: float | None) -> None:
    assert retry_after_seconds(value) == expected


def test_retry_after_header_forms() -> None:
    now = datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("-inf", None),
        ("Infinity", None),
        ("-5", 0.0),
        ("+5", 5.0),
        ("1e3", 1000.0),
        ("1e308", RETRY_AFTER_LIMIT_S),
        ("1e99999", RETRY_AFTER_LIMIT_S),
        ("1" + "0" * 400, RETRY_AFTER_LIMIT_S),
        ("9" * 100_000, RETRY_AFTER_LIMIT_S),
        ("1e-400", 0.0),
        ("", None),
        ("   ", None),
        ("1_000", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits: float() takes them, HTTP does not
        ("0x10", None),
        ("12abc", None),
        ("5 seconds", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", RETRY_AFTER_LIMIT_S),
        ("Mon, 01 Jan 0001 00:00:00 GMT", 0.0),
        ("Mon, 01 Jan 99999999999 00:00:00 GMT", None),
        ("Mon, 01 Jan 2024 00:00:00 +9999", None),
        ("Mon, 32 Jan 2024 00:00:00 GMT", None),
    ],
)
def test_hostile_retry_after_headers(header: str, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_random_retry_after_headers_give_a_safe_number_or_none() -> None:
    rng = random.Random(2024)
    alphabet = "0123456789+-.eE ,:GMTnaifyNIF\t" + "".join(map(chr, range(0x20, 0x7F)))
    pieces = ["nan", "inf", "1e308", "Mon, 01 Jan ", " GMT", "99999999999", "-", "."]
    for _ in range(5000):
        parts = [
            rng.choice(pieces) if rng.random() < 0.3 else rng.choice(alphabet)
            for _ in range(rng.randint(1, 30))
        ]
        seconds = parse_retry_after("".join(parts))
        assert seconds is None or (math.isfinite(seconds) and seconds >= 0.0), parts


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
