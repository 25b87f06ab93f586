"""The error the Segment destination raises when Segment does not accept an event."""

from __future__ import annotations

from router_core.errors import DeliveryError

__all__ = ["SegmentAPIError"]


class SegmentAPIError(DeliveryError):
    """Segment refused or never answered a request, or an event broke Segment's size limits.

    Carries ``status_code`` and ``body`` (truncated, secrets masked) when Segment answered, and
    ``retryable`` / ``retry_after`` for the router's retry policy: 408, 429, 5xx, timeouts and
    network errors are retryable; 400, 401, 403, 413 and the local size checks are not.
    """
