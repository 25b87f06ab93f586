"""Segment's documented request limits, checked before anything is sent.

Segment answers 400 for a request over its limits and drops the whole batch, so an event or
batch that cannot fit is refused here, without a request, as a permanent error.
"""

from __future__ import annotations

from event_router_segment.errors import SegmentAPIError
from router_core.limits import BatchLimits

__all__ = ["LIMITS", "check_batch_size", "check_event_count", "check_message_size"]

LIMITS = BatchLimits(max_events=2500, max_request_bytes=500_000, max_event_bytes=32_000)


def check_message_size(encoded: bytes, message_id: str | None = None) -> None:
    """Raise ``SegmentAPIError`` when one encoded message is over the per-event limit.

    ``message_id`` names the event when it is one of a batch.
    """
    size = len(encoded)
    if size > LIMITS.max_event_bytes:
        which = "event" if message_id is None else f"event {message_id!r}"
        raise SegmentAPIError(
            f"Segment API error: {which} is {size:,} bytes, "
            f"over Segment's {LIMITS.max_event_bytes // 1000} KB per-event limit"
        )


def check_event_count(count: int) -> None:
    """Raise ``SegmentAPIError`` when a batch holds more events than one request may."""
    if count > LIMITS.max_events:
        raise SegmentAPIError(
            f"Segment API error: batch has {count:,} events, "
            f"over Segment's {LIMITS.max_events:,}-event per-request limit"
        )


def check_batch_size(body: bytes) -> None:
    """Raise ``SegmentAPIError`` when a request body (before gzip) is over the request limit."""
    size = len(body)
    if size > LIMITS.max_request_bytes:
        raise SegmentAPIError(
            f"Segment API error: batch request is {size:,} bytes, "
            f"over Segment's {LIMITS.max_request_bytes // 1000} KB per-request limit"
        )
