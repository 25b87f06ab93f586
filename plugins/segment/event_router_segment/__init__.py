"""Segment destination for event-router.

Registered under the ``event_router`` entry-point group as ``segment``; a destination table
with ``plugin = "segment"`` sends events to Segment's HTTP Tracking API (``POST /v1/batch``)::

    [destinations.segment]
    plugin = "segment"
    write_key = "${SEGMENT_WRITE_KEY}"
    region = "eu"        # or host = "https://..." for a Segment-compatible server
"""

from event_router_segment.errors import SegmentAPIError
from event_router_segment.limits import LIMITS
from event_router_segment.plugin import batch_limits, destination_settings, send_batch, send_event
from event_router_segment.settings import EU_HOST, US_HOST, SegmentSettings
from event_router_segment.wire import encode_message, message

__all__ = [
    "EU_HOST",
    "LIMITS",
    "US_HOST",
    "SegmentAPIError",
    "SegmentSettings",
    "batch_limits",
    "destination_settings",
    "encode_message",
    "message",
    "send_batch",
    "send_event",
]
