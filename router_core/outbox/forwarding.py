"""An ``Outbox`` that hands every call to another one: the base of wrappers around an engine.

The spool in front of the SQLite outbox (``spool.py``) and the contract suite's clocked
wrapper (``router_core.testing.outbox_contract.ClockedOutbox``) each change a few calls and
pass the rest on unchanged; this class is that "rest", written once. A member added to the
``Outbox`` protocol is added here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from router_core.limits import BatchLimits
from router_core.outbox.store import ClaimedRow, Outbox, OutboxStats, StoredEvent, WorkerInfo

__all__ = ["ForwardingOutbox"]

_O = TypeVar("_O", bound=Outbox)


class ForwardingOutbox(Generic[_O]):
    """Every ``Outbox`` member, forwarded to ``inner``; subclasses override what they change."""

    def __init__(self, inner: _O) -> None:
        self.inner = inner

    @property
    def location(self) -> str:
        return self.inner.location

    @property
    def durable(self) -> bool:
        return self.inner.durable

    @property
    def housekeeping_interval(self) -> float | None:
        return self.inner.housekeeping_interval

    def enqueue(
        self,
        message_id: str,
        payload: str,
        destinations: Sequence[str],
        *,
        now: float,
        max_events: int | None,
        max_bytes: int | None,
    ) -> tuple[str, int, int] | None:
        return self.inner.enqueue(
            message_id, payload, destinations, now=now, max_events=max_events, max_bytes=max_bytes
        )

    def claim(
        self,
        destination: str,
        *,
        limits: BatchLimits,
        batch_size: int,
        token: str,
        now: float,
        lease_until: float,
        schedule_horizon: float | None = None,
        lease_horizon: float | None = None,
        max_in_flight: int | None = None,
    ) -> list[ClaimedRow]:
        return self.inner.claim(
            destination,
            limits=limits,
            batch_size=batch_size,
            token=token,
            now=now,
            lease_until=lease_until,
            schedule_horizon=schedule_horizon,
            lease_horizon=lease_horizon,
            max_in_flight=max_in_flight,
        )

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        self.inner.extend(destination, token, lease_until)

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        self.inner.ack(destination, token, event_ids)

    def retry(
        self,
        destination: str,
        token: str,
        event_ids: Sequence[int],
        *,
        next_attempt_at: float,
        error: str,
        status_code: int | None,
        now: float,
    ) -> None:
        self.inner.retry(
            destination, token, event_ids,
            next_attempt_at=next_attempt_at, error=error, status_code=status_code, now=now,
        )  # fmt: skip

    def dead(
        self,
        destination: str,
        token: str,
        event_ids: Sequence[int],
        *,
        error: str,
        status_code: int | None,
        now: float,
    ) -> None:
        self.inner.dead(
            destination, token, event_ids, error=error, status_code=status_code, now=now
        )

    def release(self, destination: str, token: str) -> None:
        self.inner.release(destination, token)

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        return self.inner.pending(destinations, up_to)

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        return self.inner.any_pending(destinations, up_to)

    def dead_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        return self.inner.dead_counts(destinations)

    def high_water(self) -> int:
        return self.inner.high_water()

    def stats(self, now: float) -> OutboxStats:
        return self.inner.stats(now)

    def replay(self, destination: str | None, now: float) -> int:
        return self.inner.replay(destination, now)

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        return self.inner.purge(dead_only=dead_only, destination=destination)

    def heartbeat(self, worker: WorkerInfo) -> None:
        self.inner.heartbeat(worker)

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        return self.inner.export(after, limit)

    def checkpoint(self) -> None:
        self.inner.checkpoint()

    def trim(self) -> None:
        self.inner.trim()

    def before_fork(self) -> None:
        self.inner.before_fork()

    def after_fork_in_parent(self) -> None:
        self.inner.after_fork_in_parent()

    def after_fork_in_child(self) -> None:
        self.inner.after_fork_in_child()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"
