"""The hook implementations: what the router calls to deliver events to Segment."""

from __future__ import annotations

import gzip
from collections.abc import Sequence

import httpx

from event_router_segment.errors import SegmentAPIError
from event_router_segment.limits import (
    LIMITS,
    check_batch_size,
    check_event_count,
    check_message_size,
)
from event_router_segment.settings import SegmentSettings
from event_router_segment.wire import basic_auth, encode_body, encode_message
from router_core import BatchLimits, Delivery, hookimpl
from router_core.destination import Destination
from router_core.events import Event
from router_core.http import USER_AGENT, raise_for_status

__all__ = ["batch_limits", "destination_settings", "send_batch", "send_event"]


@hookimpl
def destination_settings() -> type[SegmentSettings]:
    """Segment destinations are configured with ``SegmentSettings``."""
    return SegmentSettings


@hookimpl
def batch_limits() -> BatchLimits:
    """Segment's limits: 2,500 events and 500 KB per request, 32 KB per event."""
    return LIMITS


@hookimpl
async def send_event(destination: Destination[SegmentSettings], event: Event) -> Delivery:
    """Deliver one event as a one-message ``/v1/batch`` request."""
    encoded = encode_message(event)
    check_message_size(encoded)
    return await _post(destination, encode_body((encoded,), destination.settings.write_key))


@hookimpl
async def send_batch(
    destination: Destination[SegmentSettings], events: Sequence[Event]
) -> Delivery:
    """Deliver ``events`` in one ``/v1/batch`` request, after checking Segment's limits."""
    if not events:
        return Delivery(output={"success": True})  # nothing to deliver, so nothing to ask
    check_event_count(len(events))
    messages: list[bytes] = []
    for event in events:
        encoded = encode_message(event)
        check_message_size(encoded, event.message_id)
        messages.append(encoded)
    return await _post(destination, encode_body(messages, destination.settings.write_key))


async def _post(destination: Destination[SegmentSettings], body: bytes) -> Delivery:
    check_batch_size(body)
    settings = destination.settings
    headers = {
        "Authorization": basic_auth(settings.write_key),
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
    }
    if settings.gzip:
        body = gzip.compress(body)
        headers["Content-Encoding"] = "gzip"
    try:
        response = await destination.client.post(
            settings.batch_url, content=body, headers=headers, timeout=destination.timeout
        )
    except httpx.TimeoutException as exc:
        raise SegmentAPIError("Segment API error: request timed out", retryable=True) from exc
    except httpx.TransportError as exc:
        raise SegmentAPIError(
            f"Segment API error: network error: {type(exc).__name__}", retryable=True
        ) from exc
    raise_for_status(
        response, SegmentAPIError, message=f"Segment API error: HTTP {response.status_code}"
    )
    # Segment's own answer is {"success": true} for every accepted request.
    return Delivery(status_code=response.status_code, output={"success": True})
