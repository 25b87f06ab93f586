"""End to end: the real Segment and PostHog plugins against the emulators over loopback HTTP."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from event_router_posthog import PostHogAPIError
from event_router_segment import SegmentAPIError

from router_core import (
    Destination,
    Event,
    InvalidEventError,
    PluginRegistry,
    Router,
    SendReport,
    configure_logging,
    hookimpl,
)
from router_core.sandbox import Sandbox

WRITE_KEY = "seg-write-key-e2e-0001"
API_KEY = "phc_project_key_e2e_0001"
NO_RETRY = {"max_attempts": 1}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    with Sandbox(write_keys={WRITE_KEY}, api_keys={API_KEY}, viewer_port=None) as sb:
        yield sb


def destinations(sb: Sandbox, **extra: Any) -> dict[str, dict[str, Any]]:
    return {
        "segment": {
            "plugin": "segment",
            "write_key": WRITE_KEY,
            "host": sb.segment.url,
            "retry": NO_RETRY,
            **extra,
        },
        "posthog": {
            "plugin": "posthog",
            "api_key": API_KEY,
            "host": sb.posthog.url,
            "retry": NO_RETRY,
            **extra,
        },
    }


SIX = [
    Event.track("Order Completed", user_id="user_12345", properties={"total": 99.99}),
    Event.identify(user_id="user_12345", anonymous_id="anon-1", traits={"plan": "pro"}),
    Event.page("Pricing", user_id="user_12345", properties={"url": "https://example.com/p"}),
    Event.screen("Checkout", anonymous_id="anon-1"),
    Event.group("acme", user_id="user_12345", traits={"employees": 12}),
    Event.alias("anon-1", "user_12345"),
]
POSTHOG_NAMES = {
    "track": "Order Completed",
    "identify": "$identify",
    "page": "$pageview",
    "screen": "$screen",
    "group": "$groupidentify",
    "alias": "$create_alias",
}


def test_every_type_reaches_both_vendors_in_their_format(sandbox: Sandbox) -> None:
    with Router(destinations(sandbox)) as router:
        reports = [router.send(event) for event in SIX]
    assert all(r.ok for r in reports), [r.to_dict() for r in reports if not r.ok]
    for report in reports:
        assert report.results["segment"].output == {"success": True}
        assert report.results["posthog"].output["success"] is True

    segment = {r.message_id: r.payload for r in sandbox.segment.events}
    posthog = {r.message_id: r.payload for r in sandbox.posthog.events}
    assert set(segment) == set(posthog) == {e.message_id for e in SIX}
    for event in SIX:
        sent = segment[event.message_id]
        assert sent["type"] == event.type
        assert sent["messageId"] == event.message_id
        assert sent["context"]["library"]["name"] == "event-router"
        assert sent["timestamp"] == event.timestamp.isoformat()
        captured = posthog[event.message_id]
        assert captured["event"] == POSTHOG_NAMES[event.type]
        assert captured["uuid"] == event.message_id
        assert captured["properties"]["$lib"] == "event-router"
    assert segment[SIX[0].message_id]["properties"] == {"total": 99.99}
    assert segment[SIX[4].message_id]["groupId"] == "acme"
    assert segment[SIX[5].message_id]["previousId"] == "anon-1"
    assert posthog[SIX[1].message_id]["properties"]["$set"] == {"plan": "pro"}
    assert posthog[SIX[2].message_id]["properties"]["$current_url"] == "https://example.com/p"
    assert posthog[SIX[4].message_id]["properties"]["$group_key"] == "acme"


@pytest.mark.parametrize("status", [400, 401, 429, 500])
def test_error_statuses_give_failed_results_for_that_vendor_only(
    sandbox: Sandbox, status: int
) -> None:
    sandbox.segment.faults.set(statuses=[status])
    sandbox.posthog.faults.set(statuses=[status])
    event = Event.track("Order Completed", user_id="user_12345")
    with Router(destinations(sandbox)) as router:
        report = router.send(event)
    segment, posthog = report.results["segment"], report.results["posthog"]
    assert (segment.success, segment.status_code) == (False, status)
    assert segment.error == f"Segment API error: HTTP {status}"
    assert segment.output == {"success": False, "error": f"Segment API error: HTTP {status}"}
    assert isinstance(segment.exception, SegmentAPIError)
    assert segment.exception.status_code == status
    assert (posthog.success, posthog.status_code) == (False, status)
    assert posthog.output == {
        "success": False,
        "event": "Order Completed",
        "distinct_id": "user_12345",
        "error": f"PostHog API error: HTTP {status}",
    }
    assert isinstance(posthog.exception, PostHogAPIError)


def test_a_wrong_key_is_a_401_for_that_destination(sandbox: Sandbox) -> None:
    config = destinations(sandbox)
    config["posthog"]["api_key"] = "phc_not_the_right_key"
    with Router(config) as router:
        report = router.send(Event.track("page_view", user_id="user_123"))
    assert report.results["segment"].success
    assert report.results["posthog"].error == "PostHog API error: HTTP 401"
    assert report.results["posthog"].status_code == 401


@pytest.mark.parametrize("status", [429, 500])
def test_transient_statuses_are_retried_to_success(sandbox: Sandbox, status: int) -> None:
    sandbox.segment.faults.set(statuses=[status, status], retry_after=0)
    retry = {"max_attempts": 3, "backoff_base": 0.01}
    event = Event.track("Order Completed", user_id="user_12345")
    with Router(destinations(sandbox, retry=retry)) as router:
        report = router.send(event)
    assert report.ok
    assert report.results["segment"].attempts == 3
    assert report.results["posthog"].attempts == 1
    assert sandbox.segment.message_ids() == [event.message_id]


def test_a_destination_slower_than_its_timeout_fails_alone(sandbox: Sandbox) -> None:
    sandbox.segment.faults.set(latency=2.0)
    config = destinations(sandbox)
    config["segment"]["timeout"] = 0.3
    with Router(config) as router:
        report = router.send(Event.track("Order Completed", user_id="user_12345"))
    assert report.results["posthog"].success
    segment = report.results["segment"]
    assert not segment.success
    assert segment.error == "timed out: ReadTimeout"
    assert isinstance(segment.exception, httpx.ReadTimeout)


def test_invalid_event_makes_no_request(sandbox: Sandbox) -> None:
    with Router(destinations(sandbox)) as router, pytest.raises(InvalidEventError):
        router.send({"type": "track", "user_id": "user_12345"})
    assert sandbox.segment.requests == 0
    assert sandbox.posthog.requests == 0


def test_an_event_over_segments_limit_still_reaches_posthog(sandbox: Sandbox) -> None:
    event = Event.track("Big", user_id="u", properties={"blob": "x" * 40_000})
    with Router(destinations(sandbox)) as router:
        report = router.send(event)
    segment = report.results["segment"]
    assert not segment.success
    assert "over Segment's 32 KB per-event limit" in (segment.error or "")
    assert sandbox.segment.requests == 0
    assert report.results["posthog"].success
    assert sandbox.posthog.message_ids() == [event.message_id]


class Misbehaving:
    """Third-party plugins gone wrong, side by side with the real ones."""

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Any:
        if destination.name == "raises":
            raise ConnectionError("vendor SDK exploded")
        if destination.name == "hangs":
            await asyncio.sleep(3600)
        return ["not", "a", "Delivery"]


def test_misbehaving_plugins_do_not_stop_segment_and_posthog(sandbox: Sandbox) -> None:
    registry = PluginRegistry()
    registry.register(Misbehaving(), "misbehaving")
    config = destinations(sandbox)
    for name in ("raises", "hangs", "garbage"):
        config[name] = {"plugin": "misbehaving", "timeout": 0.2, "retry": NO_RETRY}
    event = Event.track("Order Completed", user_id="user_12345")
    with Router(config, plugins=registry) as router:
        report = router.send(event)
    assert report.results["segment"].success
    assert report.results["posthog"].success
    assert report.results["raises"].error == "plugin raised ConnectionError: vendor SDK exploded"
    assert report.results["hangs"].error == "timed out after 0.2s"
    assert report.results["garbage"].error == (
        "plugin returned list from send_event, expected Delivery"
    )
    assert sandbox.segment.message_ids() == [event.message_id]
    assert sandbox.posthog.message_ids() == [event.message_id]


def test_two_workspaces_of_one_plugin_are_two_destinations(sandbox: Sandbox) -> None:
    config = destinations(sandbox)
    config["segment_eu"] = dict(config["segment"])
    with Router(config) as router:
        report = router.send(Event.identify(user_id="u"))
    assert set(report.results) == {"segment", "segment_eu", "posthog"}
    assert report.ok
    assert len(sandbox.segment.message_ids()) == 2


def test_keys_never_appear_in_logs_reprs_errors_or_results(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    stream = io.StringIO()
    configure_logging(format="json", level="debug", stream=stream)
    try:
        sandbox.segment.faults.set(statuses=[401, 500])
        config = destinations(sandbox)
        config["posthog"]["api_key"] = "phc_wrong_key_but_secret_9"
        with Router(config) as router:
            reports = [router.send(e) for e in SIX[:3]]
            seen = [repr(router), repr(router._targets)]
    finally:
        structlog.reset_defaults()
    seen.append(stream.getvalue())
    for report in reports:
        seen.append(json.dumps(report.to_dict()))
        seen.append(repr(report))
        for result in report.results.values():
            seen.append(repr(result.exception))
            seen.append(str(result.exception))
            body = getattr(result.exception, "body", None)
            seen.append(str(body))
    text = "\n".join(seen)
    assert "delivery_attempt" in text
    assert "HTTP 401" in text
    for secret in (WRITE_KEY, "phc_wrong_key_but_secret_9"):
        assert secret not in text


def test_the_example_config_routes_to_the_emulators(sandbox: Sandbox) -> None:
    env = {
        "SEGMENT_WRITE_KEY": WRITE_KEY,
        "SEGMENT_HOST": sandbox.segment.url,
        "POSTHOG_API_KEY": API_KEY,
        "POSTHOG_HOST": sandbox.posthog.url,
    }
    config = Path(__file__).parents[1] / "config" / "router.toml"
    with Router.from_config(config, env=env) as router:
        order = router.send(Event.track("Order Completed", user_id="u"))
        other = router.send(Event.track("Button Clicked", user_id="u"))
    assert order.ok
    assert set(order.results) == {"segment", "posthog"}
    assert set(other.results) == {"segment"}  # PostHog's filter leaves this one out
    assert other.skipped == ("posthog",)


def test_delivery_results_come_back_to_asyncio_apps(sandbox: Sandbox) -> None:
    async def main() -> list[SendReport]:
        with Router(destinations(sandbox)) as router:
            return await asyncio.gather(*(router.asend(e) for e in SIX))

    reports = asyncio.run(main())
    assert all(r.ok for r in reports)
    assert len(sandbox.segment.message_ids()) == len(sandbox.posthog.message_ids()) == 6
