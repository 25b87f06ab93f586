"""Segment's documented request limits, checked by the plugin kit before anything is sent.

Segment answers 400 for a request over its limits and drops the whole batch, so an event or
batch that cannot fit is refused without a request, as a permanent error.
"""

from __future__ import annotations

from router_core import BatchLimits

__all__ = ["LIMITS"]

LIMITS = BatchLimits(max_events=2500, max_request_bytes=500_000, max_event_bytes=32_000)
"""2,500 events and 500 KB per request, 32 KB per event."""
