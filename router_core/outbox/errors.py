"""The errors raised when the outbox cannot take an event: it is full, or its file is unusable."""

from __future__ import annotations

from router_core.errors import RouterError

__all__ = ["OutboxDiskFullError", "OutboxFullError", "OutboxUnavailableError"]


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


class OutboxUnavailableError(RouterError):
    """The outbox's file cannot be used: not an outbox, read-only, deleted, locked, broken.

    ``path`` is the file; the message says what is wrong and what to do. Raised by opening
    the outbox (``Router(...)``), by ``send()`` (the event was not accepted), and by
    ``flush()`` and the maintenance calls. Events accepted earlier are never dropped by it.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OutboxDiskFullError(OutboxUnavailableError):
    """The disk holding the outbox is full, or too nearly full to keep delivering.

    The event was not accepted; everything accepted before stays stored and is still
    delivered. ``send()`` accepts events again by itself once there is room.
    """


class DeliveryDisabledError(RouterError, RuntimeError):
    """``flush()`` in a process with ``[queue] deliver = false``: it only enqueues, and
    cannot wait for delivery done by ``event-router worker`` processes."""


class TransactionalSendError(RouterError, ValueError):
    """``send(event, connection=...)`` cannot write the event in that transaction: the
    outbox is not PostgreSQL, the connection is not one it can use, or it is to another
    database. Nothing was written."""
