"""The error the Segment destination raises when Segment does not accept an event."""

from __future__ import annotations

from router_core import DeliveryError

__all__ = ["SegmentAPIError"]


class SegmentAPIError(DeliveryError):
    """Segment refused a request, or an event broke Segment's size limits.

    Carries ``status_code`` and ``body`` (truncated, secrets masked) when Segment answered, and
    ``retryable`` / ``retry_after`` for the router's retry policy: 408, 429 and 5xx are
    retryable; 400, 401, 403, 413 and the local size checks are not. Timeouts and network
    errors are the router's to report (retryable), as for every plugin.
    """
