"""PostHog's documented request limits, checked by the plugin kit before anything is sent."""

from __future__ import annotations

from router_core import BatchLimits, Oversize

__all__ = ["LIMITS", "describe_oversize"]

LIMITS = BatchLimits(max_events=1000, max_request_bytes=20_000_000, max_event_bytes=1_000_000)
"""PostHog's documented limits: about 1 MB per event, 20 MB per request."""


def describe_oversize(oversize: Oversize) -> str:
    """PostHog's wording of a limit a request would break (events are named by position)."""
    size, maximum, count = oversize.size, oversize.maximum, oversize.count
    if oversize.limit == "max_events":
        what = f"the batch has {size:,} events, over PostHog's limit of {maximum:,} events"
    elif oversize.limit == "max_request_bytes":
        what = f"the request is {size:,} bytes, over PostHog's limit of {maximum:,} bytes"
    else:
        which = "the event" if count == 1 else f"event {(oversize.index or 0) + 1} of {count}"
        what = f"{which} is {size:,} bytes, over PostHog's limit of {maximum:,} bytes per event"
        return f"PostHog API error: {what}; nothing was sent"
    return f"PostHog API error: {what} per request; nothing was sent"
