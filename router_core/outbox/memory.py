"""The in-memory outbox: the same interface as the SQLite one, without durability.

For apps that want background batching but accept losing what is still queued when the
process exits (``close()`` logs how many events were lost). After ``fork()`` a child starts
empty: the queued events stay with the parent, so nothing is sent by both.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from router_core.limits import BatchLimits
from router_core.outbox.store import (
    ClaimedRow,
    OutboxStats,
    StoredEvent,
    WorkerInfo,
    plan_batch,
)

__all__ = ["MemoryOutbox"]


@dataclass(slots=True)
class _Event:
    message_id: str
    payload: str
    size: int
    created_at: float
    rows: int


@dataclass(slots=True)
class _Row:
    next_attempt_at: float
    since: float
    state: str = "pending"
    attempts: int = 0
    token: str | None = None
    claimed_until: float | None = None
    last_error: str | None = None
    last_status: int | None = None


class MemoryOutbox:
    """An outbox in this process's memory (``backend = "memory"``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[int, _Event] = {}
        # Per destination, rows in event order (dicts keep insertion order; ids only grow).
        self._rows: dict[str, dict[int, _Row]] = {}
        self._next_id = 1
        self._bytes = 0

    @property
    def location(self) -> str:
        return ":memory:"

    @property
    def durable(self) -> bool:
        return False

    @property
    def housekeeping_interval(self) -> None:
        return None

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
        size = len(payload.encode())
        with self._lock:
            if max_events is not None and len(self._events) + 1 > max_events:
                return ("max_events", max_events, len(self._events))
            if max_bytes is not None and self._bytes + size > max_bytes:
                return ("max_bytes", max_bytes, self._bytes)
            event_id = self._next_id
            self._next_id += 1
            self._events[event_id] = _Event(message_id, payload, size, now, len(destinations))
            self._bytes += size
            for destination in destinations:
                self._rows.setdefault(destination, {})[event_id] = _Row(now, now)
        return None

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
        limit = max(1, min(batch_size, limits.max_events))
        # Past the horizons: written before the wall clock stepped back.
        scheduled_by = math.inf if schedule_horizon is None else schedule_horizon
        leased_by = math.inf if lease_horizon is None else lease_horizon
        with self._lock:
            if max_in_flight is not None:
                live = {
                    row.token
                    for row in self._rows.get(destination, {}).values()
                    if row.token is not None
                    and row.claimed_until is not None
                    and now < row.claimed_until <= leased_by
                }
                if len(live) >= max_in_flight:
                    return []
            candidates: list[tuple[int, _Row]] = []
            for event_id, row in self._rows.get(destination, {}).items():
                if (
                    row.state == "pending"
                    and (row.next_attempt_at <= now or row.next_attempt_at > scheduled_by)
                    and (
                        row.claimed_until is None
                        or row.claimed_until <= now
                        or row.claimed_until > leased_by
                    )
                ):
                    candidates.append((event_id, row))
                    if len(candidates) == limit:
                        break
            count = plan_batch([self._events[i].size for i, _ in candidates], limits, batch_size)
            claimed: list[ClaimedRow] = []
            for event_id, row in candidates[:count]:
                row.token, row.claimed_until = token, lease_until
                event = self._events[event_id]
                claimed.append(
                    ClaimedRow(
                        event_id,
                        event.message_id,
                        event.payload,
                        event.size,
                        row.attempts,
                        row.since,
                    )
                )
            return claimed

    def _held(self, destination: str, token: str, event_ids: Sequence[int]) -> list[int]:
        rows = self._rows.get(destination, {})
        return [i for i in event_ids if i in rows and rows[i].token == token]

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        with self._lock:
            for row in self._rows.get(destination, {}).values():
                if row.token == token:
                    row.claimed_until = lease_until

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        with self._lock:
            rows = self._rows.get(destination, {})
            for event_id in self._held(destination, token, event_ids):
                del rows[event_id]
                self._drop_ref(event_id)

    def _drop_ref(self, event_id: int) -> None:
        event = self._events[event_id]
        event.rows -= 1
        if event.rows == 0:
            del self._events[event_id]
            self._bytes -= event.size

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
        self._settle(destination, token, event_ids, error, status_code, retry_at=next_attempt_at)

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
        self._settle(destination, token, event_ids, error, status_code, retry_at=None)

    def _settle(
        self,
        destination: str,
        token: str,
        event_ids: Sequence[int],
        error: str,
        status_code: int | None,
        *,
        retry_at: float | None,
    ) -> None:
        """A failed attempt on claimed rows: count it, record the error, release the claim,
        and retry at ``retry_at`` (``None``: dead-letter)."""
        with self._lock:
            rows = self._rows.get(destination, {})
            for event_id in self._held(destination, token, event_ids):
                row = rows[event_id]
                row.attempts += 1
                if retry_at is None:
                    row.state = "dead"
                else:
                    row.next_attempt_at = retry_at
                row.token = row.claimed_until = None
                row.last_error, row.last_status = error, status_code

    def release(self, destination: str, token: str) -> None:
        with self._lock:
            for row in self._rows.get(destination, {}).values():
                if row.token == token:
                    row.token = row.claimed_until = None

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        with self._lock:
            return {
                d: sum(
                    1
                    for event_id, row in self._rows.get(d, {}).items()
                    if row.state == "pending" and (up_to is None or event_id <= up_to)
                )
                for d in destinations
            }

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        with self._lock:
            return any(
                row.state == "pending" and (up_to is None or event_id <= up_to)
                for d in destinations
                for event_id, row in self._rows.get(d, {}).items()
            )

    def dead_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {
                d: sum(1 for row in self._rows.get(d, {}).values() if row.state == "dead")
                for d in destinations
            }

    def high_water(self) -> int:
        with self._lock:
            return self._next_id - 1

    def stats(self, now: float) -> OutboxStats:
        with self._lock:
            counts: dict[str, dict[str, int]] = {}
            oldest: float | None = None
            for destination, rows in sorted(self._rows.items()):
                for event_id, row in rows.items():
                    if row.state == "dead":
                        state = "dead"
                    elif row.claimed_until is not None and row.claimed_until > now:
                        state = "in_flight"
                    else:
                        state = "retrying" if row.attempts else "pending"
                    if row.state == "pending":
                        created = self._events[event_id].created_at
                        oldest = created if oldest is None else min(oldest, created)
                    per = counts.setdefault(destination, {})
                    per[state] = per.get(state, 0) + 1
            return OutboxStats(counts, len(self._events), self._bytes, oldest)

    def replay(self, destination: str | None, now: float) -> int:
        moved = 0
        with self._lock:
            for name, rows in self._rows.items():
                if destination is not None and name != destination:
                    continue
                for row in rows.values():
                    if row.state == "dead":
                        row.state, row.attempts = "pending", 0
                        row.next_attempt_at = row.since = now
                        row.token = row.claimed_until = None
                        moved += 1
        return moved

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        removed = 0
        with self._lock:
            for name, rows in self._rows.items():
                if destination is not None and name != destination:
                    continue
                doomed = [i for i, row in rows.items() if not dead_only or row.state == "dead"]
                for event_id in doomed:
                    del rows[event_id]
                    self._drop_ref(event_id)
                removed += len(doomed)
        return removed

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        with self._lock:
            ids = sorted(i for i in self._events if i > after)[:limit]
            return [
                StoredEvent(
                    i,
                    self._events[i].message_id,
                    self._events[i].payload,
                    tuple(
                        (name, row.state, row.attempts, row.last_error, row.last_status)
                        for name, rows in sorted(self._rows.items())
                        if (row := rows.get(i)) is not None
                    ),
                )
                for i in ids
            ]

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Nothing kept: only this process can use a memory outbox."""

    def checkpoint(self) -> None:
        """Nothing to do in memory."""

    def trim(self) -> None:
        """Nothing to give back: delivered events are already gone."""

    def before_fork(self) -> None:
        """Nothing to hold: the child empties the outbox and makes a new lock."""

    def after_fork_in_parent(self) -> None:
        """Nothing was held."""

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._events.clear()
        self._rows.clear()
        self._bytes = 0

    def close(self) -> None:
        """Nothing to release; what is still queued is lost (the queue logs how much)."""

    def __repr__(self) -> str:
        return "MemoryOutbox()"
