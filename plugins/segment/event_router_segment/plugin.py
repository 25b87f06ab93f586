"""The hook implementations: what the router calls to deliver events to Segment."""

from __future__ import annotations

from collections.abc import Sequence

from event_router_segment.errors import SegmentAPIError
from event_router_segment.limits import LIMITS
from event_router_segment.settings import SegmentSettings
from event_router_segment.wire import basic_auth, encode_body, encode_message
from router_core import BatchLimits, Delivery, Destination, Event, hookimpl, post_events

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
    return await _post(destination, (event,))


@hookimpl
async def send_batch(
    destination: Destination[SegmentSettings], events: Sequence[Event]
) -> Delivery:
    """Deliver ``events`` in one ``/v1/batch`` request, after checking Segment's limits."""
    if not events:
        return Delivery(output={"success": True})  # nothing to deliver, so nothing to ask
    return await _post(destination, events)


async def _post(destination: Destination[SegmentSettings], events: Sequence[Event]) -> Delivery:
    settings = destination.settings
    response = await post_events(
        destination,
        events,
        url=settings.batch_url,
        encode=encode_message,
        envelope=lambda messages: encode_body(messages, settings.write_key),
        vendor="Segment",
        error=SegmentAPIError,
        limits=LIMITS,
        headers={"Authorization": basic_auth(settings.write_key)},
        gzip=settings.gzip,
    )
    # Segment's own answer is {"success": true} for every accepted request.
    return Delivery(status_code=response.status_code, output={"success": True})
