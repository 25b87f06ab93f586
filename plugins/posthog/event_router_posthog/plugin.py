"""The hook implementations: what the router calls to deliver events to PostHog's ``/batch/``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial

import httpx

from event_router_posthog.errors import PostHogAPIError
from event_router_posthog.limits import LIMITS, describe_oversize
from event_router_posthog.settings import PostHogSettings
from event_router_posthog.wire import CaptureEvent, batch_body, encode_event
from router_core import BatchLimits, Delivery, Destination, Event, hookimpl, post_events

__all__ = ["LIMITS", "batch_limits", "destination_settings", "send_batch", "send_event"]


@hookimpl
def destination_settings() -> type[PostHogSettings]:
    """PostHog destinations are configured with ``PostHogSettings``."""
    return PostHogSettings


@hookimpl
def batch_limits() -> BatchLimits:
    """PostHog's per-event and per-request limits."""
    return LIMITS


@hookimpl
async def send_event(destination: Destination[PostHogSettings], event: Event) -> Delivery:
    """Capture one event; the output has the PostHog capture job's shape."""
    capture = encode_event(event, destination.settings.group_type)
    output = partial(_event_output, capture)
    response = await _post(destination, [event], lambda _: capture.json, output)
    return Delivery(status_code=response.status_code, output=output(None))


@hookimpl
async def send_batch(
    destination: Destination[PostHogSettings], events: Sequence[Event]
) -> Delivery:
    """Capture ``events`` in one request; the output counts them."""
    output = partial(_batch_output, len(events))
    if not events:
        return Delivery(output=output(None))
    group_type = destination.settings.group_type
    response = await _post(destination, events, lambda e: encode_event(e, group_type).json, output)
    return Delivery(status_code=response.status_code, output=output(None))


def _event_output(capture: CaptureEvent, error: str | None) -> dict[str, object]:
    return {
        "success": error is None,
        "event": capture.name,
        "distinct_id": capture.distinct_id,
        "error": error,
    }


def _batch_output(count: int, error: str | None) -> dict[str, object]:
    return {"success": error is None, "events": count, "error": error}


async def _post(
    destination: Destination[PostHogSettings],
    events: Sequence[Event],
    encode: Callable[[Event], bytes],
    output: Callable[[str | None], dict[str, object]],
) -> httpx.Response:
    settings = destination.settings
    api_key = settings.api_key.get_secret_value()
    sent_at = datetime.now(UTC).isoformat()
    return await post_events(
        destination,
        events,
        url=settings.batch_url,
        encode=encode,
        envelope=lambda encoded: batch_body(api_key, encoded, sent_at),
        vendor="PostHog",
        error=PostHogAPIError,
        limits=LIMITS,
        gzip=settings.gzip,
        output=output,
        describe=describe_oversize,
    )
