"""The error a PostHog delivery raises."""

from __future__ import annotations

from router_core import DeliveryError

__all__ = ["PostHogAPIError"]


class PostHogAPIError(DeliveryError):
    """PostHog did not accept the event(s), or they broke PostHog's size limits.

    ``message`` reads ``"PostHog API error: HTTP 401"`` and the like; ``output`` has the
    shape of the original PostHog capture job:
    ``{"success": False, "event": ..., "distinct_id": ..., "error": message}``.
    """
