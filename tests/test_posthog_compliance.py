"""PostHog's SDK compliance capture suite, reproduced against the router and the PostHog plugin.

Each test is one test case of posthog-sdk-test-harness's ``contracts/capture_tests.yaml``
(server SDK type, capture_v0: the 30 cases a server SDK runs), named after it, with the same
steps: ``init`` / ``capture`` / ``flush`` through the adapter's HTTP contract
(tests/posthog_adapter.py), then the same assertions on what the mock capture server received.
The harness's fixed ``wait`` after ``flush`` is not needed: ``flush`` returns once every event
is delivered or dead-lettered (queued), and direct sends return after their last attempt, so
no request can come later.

Modes: queued with the memory and the SQLite outbox, and direct. Cases about batches of
several events run in direct mode only through ``Router.send_many``; until the router has it
they are skipped there.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from router_core import Router
from tests.posthog_adapter import MockCaptureServer, MockResponse, RecordedRequest, RouterAdapter
from tests.posthog_adapter import serve as serve_adapter

MODES = ["queued-memory", "queued-sqlite", "direct"]

# The backoff ceiling is shortened so the suite stays quick; the floor (backoff_min, the
# ">= 100 ms before a retry" the harness checks) stays the product's default.
FAST_RETRY = {"backoff_base": 0.2}

_RFC3339_UTC = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:Z|\+00:00)"
)


class Harness:
    """The harness's actions and assertions, over the adapter's HTTP contract."""

    def __init__(self, adapter_url: str, mock: MockCaptureServer, mode: str) -> None:
        self.client = httpx.Client(base_url=adapter_url, timeout=120)
        self.mock = mock
        self.mode = mode

    def call(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.client.post(path, json=params or {})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    # -- actions ------------------------------------------------------------------------------

    def init(self, **params: Any) -> None:
        self.call("/init", {"api_key": "phc_test_key", "host": self.mock.url, **params})

    def capture(self, event: str = "test_event", **params: Any) -> dict[str, Any]:
        return self.call("/capture", {"distinct_id": "test_user", "event": event, **params})

    def capture_multiple(self, count: int) -> None:
        for index in range(count):
            self.capture(f"test_event_{index}")

    def flush(self) -> None:
        self.call("/flush")

    def configure_mock_responses(self, *statuses: int | MockResponse) -> None:
        self.mock.respond_with(
            *(s if isinstance(s, MockResponse) else MockResponse(s) for s in statuses)
        )

    # -- assertions ---------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.mock.requests

    def first_event(self) -> dict[str, Any]:
        requests = self.requests
        assert requests, "no requests recorded"
        assert requests[0].events, "no events in the first request"
        return requests[0].events[0]

    def assert_request_count(self, expected: int) -> None:
        assert len(self.requests) == expected, [r.response_status for r in self.requests]

    def assert_request_count_gte(self, expected: int) -> None:
        assert len(self.requests) >= expected, [r.response_status for r in self.requests]

    def assert_event_field(self, name: str, expected: Any) -> None:
        assert self.first_event().get(name) == expected

    def assert_event_property(self, name: str, expected: Any) -> None:
        assert self.first_event().get("properties", {}).get(name) == expected

    def assert_final_success(self) -> None:
        assert any(r.response_status == 200 for r in self.requests)

    def all_uuids(self) -> list[str]:
        return [e["uuid"] for r in self.requests for e in r.events if "uuid" in e]

    def assert_field_preserved_on_retry(self, name: str) -> None:
        """The harness compares requests 0 and 1; every later attempt is compared too."""
        requests = self.requests
        assert len(requests) >= 2, "need at least 2 requests to check a retry"
        first = [e.get(name) for e in requests[0].events]
        assert first
        assert all(value is not None for value in first)
        for later in requests[1:]:
            assert [e.get(name) for e in later.events] == first

    def assert_no_duplicate_events_in_batch(self) -> None:
        assert self.requests, "no requests recorded"
        for request in self.requests:
            uuids = [e["uuid"] for e in request.events if "uuid" in e]
            assert len(uuids) == len(set(uuids)), uuids

    def retry_delays_ms(self) -> list[float]:
        times = [r.monotonic_ms for r in self.requests]
        return [later - earlier for earlier, later in itertools.pairwise(times)]

    def body(self, index: int = 0) -> Any:
        return self.requests[index].json()


@pytest.fixture(scope="module")
def mock_server() -> Iterator[MockCaptureServer]:
    server = MockCaptureServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=MODES)
def harness(request: pytest.FixtureRequest, mock_server: MockCaptureServer) -> Iterator[Harness]:
    mode = request.param
    adapter = RouterAdapter(mode, retry=FAST_RETRY)
    mock_server.reset()  # what the harness's reset does before every test case
    with serve_adapter(adapter) as url:
        harness = Harness(url, mock_server, mode)
        try:
            yield harness
        finally:
            harness.call("/reset")
            harness.client.close()


def _needs_batches(harness: Harness) -> None:
    """Cases that put several events in one request: direct mode needs ``send_many``."""
    if harness.mode == "direct" and not hasattr(Router, "send_many"):
        pytest.skip("direct mode batches through Router.send_many, not available yet")


# -- format_validation ------------------------------------------------------------------------


def test_event_has_required_fields(harness: Harness) -> None:
    harness.init(flush_at=1)
    harness.capture("test_event")
    harness.flush()
    harness.assert_request_count(1)
    harness.assert_event_field("event", "test_event")
    harness.assert_event_field("distinct_id", "test_user")


def test_event_has_uuid(harness: Harness) -> None:
    harness.init()
    answer = harness.capture()
    harness.flush()
    sent = harness.first_event()["uuid"]
    assert str(uuid.UUID(sent)) == sent
    assert answer["uuid"] == sent  # the adapter reports the uuid that went on the wire


def test_event_has_lib_properties(harness: Harness) -> None:
    harness.init()
    harness.capture()
    harness.flush()
    properties = harness.first_event()["properties"]
    assert properties["$lib"] == "event-router"
    assert isinstance(properties["$lib_version"], str)
    assert properties["$lib_version"]


def test_distinct_id_is_string(harness: Harness) -> None:
    harness.init()
    harness.capture(distinct_id="test_user_123")
    harness.flush()
    harness.assert_event_field("distinct_id", "test_user_123")


def test_token_is_present(harness: Harness) -> None:
    harness.init(api_key="phc_test_key")
    harness.capture()
    harness.flush()
    assert harness.body()["api_key"] == "phc_test_key"


def test_custom_properties_preserved(harness: Harness) -> None:
    harness.init()
    harness.capture(properties={"custom_string": "hello", "custom_number": 42, "custom_bool": True})
    harness.flush()
    harness.assert_event_property("custom_string", "hello")
    harness.assert_event_property("custom_number", 42)
    harness.assert_event_property("custom_bool", True)
    assert type(harness.first_event()["properties"]["custom_number"]) is int


def test_event_has_timestamp(harness: Harness) -> None:
    harness.init()
    harness.capture()
    harness.flush()
    timestamp = harness.first_event()["timestamp"]
    assert _RFC3339_UTC.fullmatch(timestamp), timestamp


def test_non_utc_event_timestamp_is_converted_to_utc(harness: Harness) -> None:
    harness.init(flush_at=1)
    harness.capture(
        timestamp="2025-01-02T08:34:05+05:30",
        properties={"timestamp_like": "2025-01-02T08:34:05+05:30"},
    )
    harness.flush()
    timestamp = harness.first_event()["timestamp"]
    assert _RFC3339_UTC.fullmatch(timestamp), timestamp
    assert datetime.fromisoformat(timestamp) == datetime.fromisoformat("2025-01-02T03:04:05Z")
    harness.assert_event_property("timestamp_like", "2025-01-02T08:34:05+05:30")


# -- retry_behavior ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "statuses"),
    [
        ("retries_on_503", (503, 503, 200)),
        ("retries_on_500", (500, 200)),
        ("retries_on_502", (502, 200)),
        ("retries_on_504", (504, 200)),
        ("retries_on_408", (408, 200)),  # error_handling in the harness
    ],
)
def test_retries_on_transient_status(
    harness: Harness, name: str, statuses: tuple[int, ...]
) -> None:
    """retries_on_503 / _500 / _502 / _504 / _408: every answer is retried until the 200."""
    harness.configure_mock_responses(
        *(MockResponse(s, body='{"error": "try again"}') for s in statuses)
    )
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count(len(statuses))
    harness.assert_final_success()
    harness.assert_field_preserved_on_retry("uuid")


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("does_not_retry_on_400", 400),
        ("does_not_retry_on_401", 401),
        ("does_not_retry_on_403", 403),  # error_handling in the harness
        ("does_not_retry_on_413", 413),  # error_handling in the harness
    ],
)
def test_does_not_retry_on_permanent_status(harness: Harness, name: str, status: int) -> None:
    """does_not_retry_on_400 / _401 / _403 / _413: one request, then the event is given up."""
    harness.configure_mock_responses(MockResponse(status, body='{"error": "refused"}'))
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count(1)
    state = harness.client.get("/state").json()
    assert state["pending_events"] == 0
    if harness.mode == "direct":
        assert f"HTTP {status}" in state["last_error"]


def test_respects_retry_after_header(harness: Harness) -> None:
    harness.configure_mock_responses(
        MockResponse(429, {"Retry-After": "3"}, '{"error": "Rate limited"}'), MockResponse(200)
    )
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count_gte(2)
    harness.assert_final_success()
    assert harness.retry_delays_ms()[0] >= 2500  # the harness's bound; Retry-After is 3 s


def test_implements_backoff(harness: Harness) -> None:
    harness.configure_mock_responses(503, 503, 503, 200)
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count(4)
    harness.assert_final_success()
    # The harness checks the first retry; every retry here waits at least the 100 ms floor.
    delays = harness.retry_delays_ms()
    assert min(delays) >= 100, delays


def test_max_retries_respected(harness: Harness) -> None:
    harness.configure_mock_responses(503, 503, 503, 503, 503)
    harness.init(max_retries=3)
    harness.capture()
    harness.flush()
    harness.assert_request_count(4)  # the first attempt and 3 retries, then it gives up
    assert all(r.response_status == 503 for r in harness.requests)


# -- deduplication ----------------------------------------------------------------------------


def test_generates_unique_uuids(harness: Harness) -> None:
    harness.init()
    harness.capture_multiple(5)
    harness.flush()
    uuids = harness.all_uuids()
    assert len(uuids) == 5
    assert len(set(uuids)) == 5


def test_preserves_uuid_on_retry(harness: Harness) -> None:
    harness.configure_mock_responses(503, 200)
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count(2)
    harness.assert_field_preserved_on_retry("uuid")


def test_preserves_uuid_and_timestamp_on_retry(harness: Harness) -> None:
    harness.configure_mock_responses(503, 503, 200)
    harness.init()
    harness.capture()
    harness.flush()
    harness.assert_request_count_gte(3)
    harness.assert_field_preserved_on_retry("uuid")
    harness.assert_field_preserved_on_retry("timestamp")


def test_preserves_uuid_and_timestamp_on_batch_retry(harness: Harness) -> None:
    _needs_batches(harness)
    harness.configure_mock_responses(503, 200)
    harness.init(flush_at=10)
    harness.capture_multiple(3)
    harness.flush()
    harness.assert_request_count(2)
    assert len(harness.requests[0].events) == 3  # one batch, retried whole
    harness.assert_field_preserved_on_retry("uuid")
    harness.assert_field_preserved_on_retry("timestamp")
    harness.assert_no_duplicate_events_in_batch()


def test_no_duplicate_events_in_batch(harness: Harness) -> None:
    _needs_batches(harness)
    harness.init(flush_at=10)
    harness.capture_multiple(5)
    harness.flush()
    harness.assert_request_count_gte(1)
    harness.assert_no_duplicate_events_in_batch()
    assert len(harness.all_uuids()) == 5


def test_different_events_have_different_uuids(harness: Harness) -> None:
    harness.init()
    harness.capture(properties={"key": "value"})
    harness.capture(properties={"key": "value"})
    harness.flush()
    uuids = harness.all_uuids()
    assert len(uuids) == 2
    assert uuids[0] != uuids[1]


# -- compression ------------------------------------------------------------------------------


def test_sends_gzip_when_enabled(harness: Harness) -> None:
    harness.init(enable_compression=True)
    harness.capture()
    harness.flush()
    request = harness.requests[0]
    assert request.headers.get("content-encoding") == "gzip"
    assert request.body_raw[:2] == b"\x1f\x8b"  # the body really is gzip
    assert request.events[0]["event"] == "test_event"


# -- batch_format -----------------------------------------------------------------------------


def test_uses_proper_batch_structure(harness: Harness) -> None:
    harness.init()
    harness.capture()
    harness.flush()
    assert harness.requests[0].path == "/batch/"
    body = harness.body()
    assert body["api_key"] == "phc_test_key"
    assert isinstance(body["batch"], list)
    assert len(body["batch"]) == 1


def test_flush_with_no_events_sends_nothing(harness: Harness) -> None:
    harness.init()
    harness.flush()
    harness.assert_request_count(0)


def test_multiple_events_batched_together(harness: Harness) -> None:
    _needs_batches(harness)
    harness.init(flush_at=10)
    harness.capture_multiple(5)
    harness.flush()
    harness.assert_request_count(1)
    body = harness.body()
    assert isinstance(body["batch"], list)
    assert [e["event"] for e in body["batch"]] == [f"test_event_{i}" for i in range(5)]
