"""Acceptance: the vendors' own Python SDKs, pointed at the emulators, are accepted as-is.

If an emulator refused what a real SDK sends, the emulator (not the SDK) would be wrong.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import posthog
import posthog.request
import pytest
import segment.analytics.request  # type: ignore[import-untyped]
from segment.analytics import Client as SegmentClient

from router_core.sandbox import PostHogEmulator, SegmentEmulator

WRITE_KEY = "wk_sdk_0123456789abcdef"
API_KEY = "phc_sdk_0123456789abcdef"


@pytest.fixture
def no_leaked_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    # The SDKs pool keep-alive connections in module-level sessions: close them too.
    segment.analytics.request._session.close()
    posthog.request.reset_sessions()
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


@pytest.mark.parametrize("gzip", [False, True])
def test_segment_sdk_is_accepted(no_leaked_threads: None, gzip: bool) -> None:
    errors: list[Any] = []
    with SegmentEmulator(write_keys={WRITE_KEY}) as em:
        client = SegmentClient(
            WRITE_KEY,
            host=em.url,
            gzip=gzip,
            max_retries=0,  # a refusal must fail the test, not be retried with backoff
            upload_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )
        try:
            sent = [
                client.track("user_1", "Order Completed", {"total": 99.99}),
                client.identify("user_1", {"plan": "pro"}),
                client.page("user_1", "Docs", "Getting Started", {"url": "https://x.test"}),
                client.screen("user_1", "App", "Home"),
                client.group("user_1", "acme", {"name": "Acme Inc"}),
                client.alias("anon_1", "user_1"),
                client.track(anonymous_id="anon_2", event="Browsed"),
            ]
            client.flush()
        finally:
            client.shutdown()

        assert errors == []
        assert all(queued for queued, _message in sent)
        assert em.message_ids() == [message["messageId"] for _queued, message in sent]
        assert [e.type for e in em.events] == [
            "track",
            "identify",
            "page",
            "screen",
            "group",
            "alias",
            "track",
        ]
        first = em.events[0]
        assert first.event == "Order Completed"
        assert first.payload["properties"] == {"total": 99.99}
        assert first.payload["context"]["library"]["name"] == "analytics-python"
        assert em.events[-1].distinct_id == "anon_2"
        assert {e.key for e in em.events} == {"…cdef"}


def test_segment_sdk_sees_a_wrong_key_refused(no_leaked_threads: None) -> None:
    errors: list[Any] = []
    with SegmentEmulator(write_keys={WRITE_KEY}) as em:
        client = SegmentClient(
            "wk_wrong_0000000000000",
            host=em.url,
            max_retries=0,
            upload_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )
        try:
            client.track("user_1", "Order Completed")
            client.flush()
        finally:
            client.shutdown()

        assert em.events == []
        assert [getattr(e, "status", None) for e in errors] == [401]


@pytest.mark.parametrize("gzip", [False, True])
def test_posthog_sdk_is_accepted(no_leaked_threads: None, gzip: bool) -> None:
    errors: list[Any] = []
    with PostHogEmulator(api_keys={API_KEY}) as em:
        client = posthog.Posthog(
            project_api_key=API_KEY,
            host=em.url,
            gzip=gzip,
            max_retries=0,
            flush_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )
        try:
            uuids = [
                client.capture("Order Completed", distinct_id="user_1", properties={"total": 1}),
                client.capture(
                    "$pageview", distinct_id="user_1", properties={"$current_url": "https://x"}
                ),
                client.set(distinct_id="user_1", properties={"plan": "pro"}),
                client.set_once(distinct_id="user_1", properties={"first_seen": "2024"}),
                client.group_identify("company", "acme", {"name": "Acme"}, distinct_id="user_1"),
                client.alias(previous_id="anon_1", distinct_id="user_1"),
            ]
            client.flush()
        finally:
            client.shutdown()

        assert errors == []
        assert None not in uuids
        assert em.message_ids() == uuids
        assert [e.event for e in em.events] == [
            "Order Completed",
            "$pageview",
            "$set",
            "$set_once",
            "$groupidentify",
            "$create_alias",
        ]
        assert [e.type for e in em.events][:2] == ["track", "page"]
        assert em.events[4].payload["properties"]["$group_key"] == "acme"
        assert em.events[0].payload["properties"]["$lib"] == "posthog-python"
        assert {e.key for e in em.events} == {"phc_…cdef"}


def test_posthog_sdk_with_a_personal_key_is_refused(no_leaked_threads: None) -> None:
    errors: list[Any] = []
    with PostHogEmulator() as em:
        client = posthog.Posthog(
            project_api_key="phx_personal_0123456789",
            host=em.url,
            max_retries=0,
            flush_interval=0.05,
            on_error=lambda error, batch: errors.append(error),
        )
        try:
            client.capture("Order Completed", distinct_id="user_1")
            client.flush()
        finally:
            client.shutdown()

        assert em.events == []
        assert [r.status for r in em.request_log] == [401]
        assert [getattr(e, "status", None) for e in errors] == [401]
