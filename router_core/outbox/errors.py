"""The error raised when the outbox has no room for another event."""

from __future__ import annotations

from router_core.errors import RouterError

__all__ = ["OutboxFullError"]


class OutboxFullError(RouterError):
    """The outbox reached ``max_events`` or ``max_bytes``; the event was not accepted.

    Raised at once with ``when_full = "refuse"``, or after ``block_timeout`` seconds with
    ``when_full = "block"``. ``limit`` names the setting that was hit (``"max_events"`` or
    ``"max_bytes"``); nothing already in the outbox is affected.
    """

    def __init__(self, message: str, *, limit: str, value: int, stored: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.stored = stored
