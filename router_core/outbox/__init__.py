"""Queued delivery: a durable outbox, a background worker, dead letters, backpressure.

With ``[queue]`` in the config (or ``Router(queue=...)``), ``send()`` returns as soon as the
event is recorded in the outbox, and a worker per destination delivers it in batches. See
docs/delivery.md.
"""

from router_core.errors import (
    DeliveryDisabledError,
    OutboxDiskFullError,
    OutboxFullError,
    OutboxUnavailableError,
    TransactionalSendError,
)
from router_core.outbox.backends import OutboxBackend
from router_core.outbox.memory import MemoryOutbox
from router_core.outbox.queue import QueuedDelivery, open_outbox
from router_core.outbox.sqlite import SQLiteOutbox
from router_core.outbox.store import STATES, ClaimedRow, Outbox, OutboxStats
from router_core.settings import DEFAULT_OUTBOX_PATH, QueueRetrySettings, QueueSettings

__all__ = [
    "DEFAULT_OUTBOX_PATH",
    "STATES",
    "ClaimedRow",
    "DeliveryDisabledError",
    "MemoryOutbox",
    "Outbox",
    "OutboxBackend",
    "OutboxDiskFullError",
    "OutboxFullError",
    "OutboxStats",
    "OutboxUnavailableError",
    "QueueRetrySettings",
    "QueueSettings",
    "QueuedDelivery",
    "SQLiteOutbox",
    "TransactionalSendError",
    "open_outbox",
]
