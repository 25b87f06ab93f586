"""What every outbox backend provides, and the records that pass through it.

An outbox holds each accepted event once (its JSON) plus one row per destination it is
routed to. Rows are ``pending`` until that destination acknowledges them (the row is then
deleted) or they are dead-lettered (``dead``). A worker *claims* rows for a lease before
sending them, so two processes sharing an outbox never send the same rows, and rows held by
a process that died become claimable again when the lease runs out.

``Outbox`` is the whole contract an engine implements; ``router_core.testing.outbox_contract``
is the test suite that checks an engine against it, and ``router_core.outbox.backends`` how an
engine is registered (docs/delivery.md, "Writing an outbox engine").
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol, runtime_checkable

from router_core.limits import BatchLimits

__all__ = [
    "ENVELOPE_BYTES",
    "STATES",
    "AcceptedEvent",
    "BulkOutbox",
    "ClaimedRow",
    "DeferredOutbox",
    "ForkLocks",
    "Outbox",
    "OutboxStats",
    "StoredEvent",
    "WorkerInfo",
    "estimate_bytes",
    "plan_batch",
    "routes_json",
]

STATES = ("pending", "retrying", "in_flight", "dead")
"""States ``stats()`` counts: new rows, rows that failed before, claimed rows, dead letters."""

ENVELOPE_BYTES = 1024
"""Room kept in each request for the batch envelope (``sentAt``, keys, auth in the body)."""


def estimate_bytes(stored_size: int) -> int:
    """Estimated size of an event on the wire from the size of its stored JSON.

    Vendors' encodings rename keys and add library context; the margin covers that, and a
    batch that is still too big is split when the destination refuses it.
    """
    return stored_size + stored_size // 10 + 256


@functools.lru_cache(maxsize=256)
def routes_json(destinations: tuple[str, ...]) -> str:
    """The destinations of an event as an outbox stores them: a JSON array, each name once,
    in order. Cached: most events go to one of a few destination lists."""
    return json.dumps(list(dict.fromkeys(destinations)))


def plan_batch(sizes: Sequence[int], limits: BatchLimits, batch_size: int) -> int:
    """How many of the rows (in order, by stored size) fit in one request.

    Always at least one, so an event estimated over the per-event limit is sent on its own
    and the destination decides.
    """
    if not sizes:
        return 0
    max_events = max(1, min(batch_size, limits.max_events))
    budget = limits.max_request_bytes - ENVELOPE_BYTES
    if estimate_bytes(sizes[0]) > min(limits.max_event_bytes, budget):
        return 1
    total = 0
    count = 0
    for size in sizes[:max_events]:
        estimate = estimate_bytes(size)
        if estimate > limits.max_event_bytes or total + estimate > budget:
            break
        total += estimate
        count += 1
    return max(count, 1)


class AcceptedEvent(NamedTuple):
    """An event ``send()`` accepted that is not in the outbox yet (a spool's record).

    A named tuple, not a dataclass: one is made per event on ``send()``'s path.
    """

    message_id: str
    payload: str
    destinations: tuple[str, ...]
    accepted_at: float


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One destination's row of one event, claimed for delivery."""

    event_id: int
    message_id: str
    payload: str
    size: int
    attempts: int
    since: float
    """When the retry budget started: when the event was accepted, or last replayed."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One stored event with its undelivered rows, for copying an outbox into another.

    ``rows`` holds ``(destination, state, attempts, last_error, last_status)`` for each row
    still pending or dead (``state`` is ``"pending"`` or ``"dead"``).
    """

    id: int
    message_id: str
    payload: str
    rows: tuple[tuple[str, str, int, str | None, int | None], ...]


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One ``event-router worker`` process, as its heartbeats record it.

    ``delivered`` and ``failed`` count rows (one event to one destination) since it started;
    ``started`` and ``last_seen`` are Unix seconds (the database's clock where it has one).
    ``stopped`` is set by the worker's last heartbeat, as it exits cleanly.
    """

    id: str
    host: str
    pid: int
    destinations: tuple[str, ...]
    started: float = 0.0
    last_seen: float = 0.0
    delivered: int = 0
    failed: int = 0
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class OutboxStats:
    """What ``event-router outbox status`` shows.

    ``counts[destination][state]`` for the states in ``STATES``; ``events`` and ``bytes`` are
    the stored events (each counted once, however many destinations it goes to);
    ``oldest_pending`` is the accept time (Unix seconds) of the oldest undelivered row.
    ``dead_tuples`` (PostgreSQL; empty elsewhere) counts, per outbox table, the deleted and
    updated row versions VACUUM has not reclaimed yet: a number that keeps growing means
    bloat is coming (a long-open transaction somewhere, or autovacuum falling behind).
    """

    counts: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    events: int = 0
    bytes: int = 0
    oldest_pending: float | None = None
    dead_tuples: Mapping[str, int] = field(default_factory=dict)
    workers: tuple[WorkerInfo, ...] = ()
    """Worker processes that sent heartbeats (PostgreSQL; empty elsewhere)."""

    def total(self, state: str) -> int:
        return sum(c.get(state, 0) for c in self.counts.values())


class Outbox(Protocol):
    """Everything the queue (``queue.py``), the workers (``worker.py``) and the CLI need from
    an outbox engine (SQLite, in-memory, PostgreSQL, or one registered by another package).

    **Threads.** Every method may be called from any thread, at the same time as any other:
    ``send()`` calls ``enqueue()`` in the application's threads, the workers call the claim
    and settle methods from the router's loop thread (and ``asyncio.to_thread``), flushes read
    counts from the thread that flushes, ``checkpoint()`` runs in a worker thread. Each method
    is atomic on its own: another process (or thread) sees all of its change or none of it.

    **Time.** Times are Unix seconds (``time.time()``), so that leases mean the same in every
    process sharing the outbox. An engine with a clock of its own (PostgreSQL uses the
    database's) may store its own times instead, as long as it takes only *lengths* from the
    arguments (``lease_until - now``, ``next_attempt_at - now``, ``horizon - now``); what it
    reports (``ClaimedRow.since``, ``OutboxStats``) is then on its clock.

    **Tokens.** ``claim()`` marks rows with the caller's token; every later change names the
    token and touches only rows still held under it, so a worker whose lease ran out (and
    whose rows another worker took) changes nothing.

    **Extending.** New members are added here with a docstring saying who calls them; every
    engine, and ``router_core.outbox.forwarding.ForwardingOutbox`` (the base of wrappers), follows.
    """

    # -- what it is ---------------------------------------------------------------------------

    @property
    def location(self) -> str:
        """Where the outbox lives, for messages (a file path, ``":memory:"``, a URL with its
        password masked). Never holds a secret."""
        ...

    @property
    def durable(self) -> bool:
        """Whether what is stored outlives the process. ``close()`` with rows left logs them
        as lost when false, and as left for the next router that opens the outbox when true."""
        ...

    @property
    def housekeeping_interval(self) -> float | None:
        """Seconds between the queue's calls of ``checkpoint()`` while workers run, or ``None``
        when the engine needs none (the queue then starts no housekeeping task)."""
        ...

    # -- storing and delivering -----------------------------------------------------------------

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
        """Store one event with a pending row per destination, atomically.

        Returns ``None`` when stored, or ``(limit name, limit, stored)`` when storing it
        would pass ``max_events`` or ``max_bytes`` (nothing is stored then).
        """
        ...

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
        """Claim the oldest due rows of ``destination`` that fit one request (``plan_batch``).

        With ``max_in_flight``, claim nothing (return ``[]``) while that many batches of
        ``destination`` are held under live (unexpired) claims by anyone sharing the outbox;
        a batch counts from its claim until ``release`` (or its lease runs out).

        A row is due when ``next_attempt_at <= now`` and free when it has no claim or
        ``claimed_until <= now``. Stored times later than the horizons (``now`` plus the
        longest backoff, or plus the longest lease) were written before the wall clock
        stepped back: a row scheduled after ``schedule_horizon`` is due, a claim lasting past
        ``lease_horizon`` has expired. ``None`` trusts every stored time.
        """
        ...

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        """Push back the lease of every row held under ``token``."""
        ...

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        """Delivered: drop the rows, and each event no destination still needs."""
        ...

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
        """A transient failure: count the attempt, release the rows until ``next_attempt_at``."""
        ...

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
        """Give up: count the attempt and move the rows to the dead letter with the error."""
        ...

    def release(self, destination: str, token: str) -> None:
        """Hand back every row held under ``token`` without counting an attempt."""
        ...

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        """Undelivered, not dead rows per destination (events with id <= ``up_to``)."""
        ...

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        """Whether ``pending()`` would count anything (cheap: stops at the first row)."""
        ...

    def dead_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        """Dead-letter rows per destination."""
        ...

    def high_water(self) -> int:
        """The id of the newest stored event (0 when empty)."""
        ...

    def stats(self, now: float) -> OutboxStats:
        """Counts per destination and state, and the stored totals."""
        ...

    def replay(self, destination: str | None, now: float) -> int:
        """Move dead rows (of one destination, or all) back to pending; return how many."""
        ...

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        """Delete rows (only dead ones with ``dead_only``); return how many rows went."""
        ...

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Record that ``worker`` is alive with these counts (``event-router worker`` calls it
        every few seconds, and once with ``stopped`` as it exits); ``stats()`` reports them.
        Backends that cannot be shared between machines may keep nothing."""
        ...

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        """Up to ``limit`` stored events with id above ``after``, in id order, each with its
        pending and dead rows (``event-router outbox copy`` pages through them)."""
        ...

    # -- housekeeping ---------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Housekeeping kept off ``enqueue()``'s path (SQLite: copy the write-ahead log into the
        database file). The queue calls it every ``housekeeping_interval`` seconds from a worker
        thread; it must never wait long for, nor hold up, ``enqueue()``. A ``RouterError`` or
        ``RuntimeError`` means "not now" (the queue tries again next time)."""
        ...

    def trim(self) -> None:
        """Give back space that a peak left behind, cheaply or not at all (SQLite: truncate a
        large write-ahead log). The queue calls it after a flush that left nothing pending, in
        the flushing thread; engines with nothing to give back do nothing."""
        ...

    # -- fork -------------------------------------------------------------------------------------

    def before_fork(self) -> None:
        """Called in the forking thread just before ``fork()``: take every lock that guards
        state the child will touch, so that no other thread holds one at the moment of the
        fork (the child would wait forever for a thread it does not have). Bounded: a lock
        still busy after a few seconds is left alone. Followed by exactly one of the two below.
        """
        ...

    def after_fork_in_parent(self) -> None:
        """In the parent, after ``fork()``: release what ``before_fork()`` took."""
        ...

    def after_fork_in_child(self) -> None:
        """In the child, after ``fork()``: drop what belongs to the parent (connections, pools,
        claims held by the parent's workers) without using or closing it, and make new locks.
        The child reopens on first use; a durable outbox then sees what the parent stored,
        a non-durable one starts empty (the parent keeps and delivers its events)."""
        ...

    def close(self) -> None:
        """Release the storage. Safe to call twice; nothing is used after it."""
        ...


_FORK_LOCK_TIMEOUT_S = 10.0


class ForkLocks:
    """For engines: holds locks from ``before_fork()`` to ``after_fork_in_parent()``.

    ``hold(lock, ...)`` takes them in the order given (waiting at most a few seconds for each:
    a lock held that long belongs to a stuck thread, and the fork goes ahead without it);
    ``release()`` lets go in reverse order; ``forget()`` is for the child, whose engine makes
    new locks and must not release the parent's.
    """

    def __init__(self) -> None:
        self._held: list[threading.Lock] = []

    def hold(self, *locks: threading.Lock) -> None:
        for lock in locks:
            if lock.acquire(timeout=_FORK_LOCK_TIMEOUT_S):
                self._held.append(lock)

    def release(self) -> None:
        held, self._held = self._held, []
        for lock in reversed(held):
            lock.release()

    def forget(self) -> None:
        self._held = []


@runtime_checkable
class BulkOutbox(Outbox, Protocol):
    """An engine a per-process spool (``router_core.outbox.spool``) can sit in front of: it
    stores events already accepted in bulk, says what it holds cheaply, and says whether a
    ``enqueue()`` now would be refused for the storage's health without trying one."""

    def enqueue_many(self, events: Sequence[AcceptedEvent]) -> None:
        """Store events that were already accepted, in one transaction, each with a pending
        row per destination, WITHOUT the size limits: an accepted event is never refused."""
        ...

    def stored_totals(self) -> tuple[int, int]:
        """``(events, bytes)`` stored, as ``enqueue()``'s size limits count them (cheap: the
        spool reads it after every move)."""
        ...

    def healthy(self) -> bool:
        """False when ``enqueue()`` would now refuse for the storage itself (file lost, disk
        full or nearly so). Cheap, and never raises: the spool then takes ``enqueue()``."""
        ...


@runtime_checkable
class DeferredOutbox(Protocol):
    """An outbox whose ``enqueue()`` accepts an event before it is in the outbox proper (a
    spool moves it there moments later), and says when events get there: the queue then
    tells its workers about events once they can be claimed, not on ``send()``'s path."""

    def notify_stored(self, callback: Callable[[Sequence[AcceptedEvent]], None]) -> None:
        """Call ``callback`` with each group of events once they are in the outbox, from
        whichever thread moved them (it must be quick, and what it raises is logged)."""
        ...


@runtime_checkable
class TransactionalOutbox(Protocol):
    """An engine that can also write an event inside the application's own transaction
    (``router.send(event, connection=conn)``): the PostgreSQL outbox."""

    def enqueue_in(
        self,
        connection: object,
        message_id: str,
        payload: str,
        destinations: Sequence[str],
        *,
        max_events: int | None,
        max_bytes: int | None,
    ) -> tuple[str, int, int] | None:
        """``enqueue()`` inside the caller's open transaction on ``connection``: the event
        becomes claimable when that transaction commits, and is gone if it rolls back.
        Returns what ``enqueue()`` returns."""
        ...
