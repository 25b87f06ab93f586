"""Queued delivery for one router: admission (with backpressure), workers, flush, fork.

``send()`` calls ``enqueue()``, which returns once the event is durably recorded; the
workers (``worker.py``) deliver in the background on the router's loop. ``flush()`` waits for
what was accepted before it was called; ``close()`` drains (bounded) and stops.

After ``fork()`` the child drops the parent's workers, connection and locks, and starts its
own workers on first use. Claims in the outbox make sure no row is sent by both processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Sequence

from router_core.errors import (
    DeliveryDisabledError,
    OutboxFullError,
    RouterError,
    TransactionalSendError,
)
from router_core.events import Event
from router_core.logs import get_logger
from router_core.outbox.backends import get_backend
from router_core.outbox.rebuilt import RebuiltEvents
from router_core.outbox.store import (
    AcceptedEvent,
    DeferredOutbox,
    Outbox,
    TransactionalOutbox,
)
from router_core.outbox.worker import DestinationWorker
from router_core.results import FlushResult
from router_core.runtime import LoopThread
from router_core.settings import QueueSettings
from router_core.targets import TargetSource

__all__ = ["QueuedDelivery", "open_outbox"]

log = get_logger("event_router.outbox")


_WAIT_POLL_S = 0.05  # how often waiters look at the outbox when no worker of ours signals
_STOP_GRACE_S = 2.0  # after the drain: how long a request in flight may take to finish
# Stored events rebuilt and kept for every destination's worker: a few requests' worth.
_REBUILT_EVENTS = 4_000


def open_outbox(settings: QueueSettings) -> Outbox:
    """The outbox ``settings`` describe, opened by its registered backend (the SQLite file, or
    the PostgreSQL schema, is created when missing)."""
    return get_backend(settings.backend).open(settings)


class QueuedDelivery:
    """Owns one router's outbox and its workers."""

    def __init__(
        self,
        settings: QueueSettings,
        *,
        runtime: LoopThread,
        targets: TargetSource,
        destinations: Sequence[str],
        outbox: Outbox | None = None,
        tasks_per_destination: int = 1,
    ) -> None:
        self.settings = settings
        # Batches this process delivers at once per destination (`event-router worker
        # --concurrency`); each task claims batches of its own.
        self._tasks = max(1, tasks_per_destination)
        self._delivery_stopped = False
        self._delivery_only = False
        self._retired: list[DestinationWorker] = []
        self._max_bytes = settings.byte_limit
        self.outbox: Outbox = outbox if outbox is not None else open_outbox(settings)
        self._runtime = runtime
        self._targets = targets
        self._names = tuple(destinations)
        self._workers: dict[str, DestinationWorker] = {}
        self._housekeeper: asyncio.Task[None] | None = None
        self._started_pid: int | None = None
        self._start_lock = threading.Lock()
        self._progress = threading.Condition()
        self._flushing = 0
        self._closed = False
        self._rebuilt = RebuiltEvents(_REBUILT_EVENTS)
        # A spool tells us when events reach the outbox: the workers hear of them then (when
        # they can claim them), and send() has nothing to do for them.
        self._deferred = False
        if isinstance(self.outbox, DeferredOutbox):
            self.outbox.notify_stored(self._stored)
            self._deferred = True
        _live.add(self)

    @property
    def destinations(self) -> tuple[str, ...]:
        return self._names

    # -- workers ------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the workers in this process (idempotent; again in a forked child).

        With ``[queue] deliver = false`` none start: this process only enqueues.
        """
        pid = os.getpid()
        if self._started_pid == pid or self._closed or self._delivery_stopped:
            return
        if not self.settings.deliver:
            self._started_pid = pid
            return
        with self._start_lock:
            if self._started_pid == pid or self._closed:
                return
            self._runtime.run(self._start_workers())
            self._started_pid = pid

    async def _start_workers(self) -> None:
        self._workers = {}
        for target in self._targets():
            destination = target.destination
            for copy in range(self._tasks):
                worker = DestinationWorker(
                    outbox=self.outbox,
                    plugin=target.plugin,
                    destination=destination,
                    transforms=target.transforms,
                    observers=target.observers,
                    settings=self.settings,
                    rebuilt=self._rebuilt,
                    is_flushing=lambda: self._flushing > 0,
                    on_progress=self._notify_progress,
                    hinted=not self._delivery_only,
                )
                # The first task of a destination takes send()'s hints; the others poll.
                key = destination.name if copy == 0 else f"{destination.name}#{copy}"
                worker.task = asyncio.create_task(worker.run(), name=f"event-router-outbox-{key}")
                self._workers[key] = worker
        interval = self.outbox.housekeeping_interval
        if interval is not None:
            self._housekeeper = asyncio.create_task(
                self._checkpoints(interval), name="event-router-outbox-checkpoint"
            )

    async def _checkpoints(self, interval: float) -> None:
        """The outbox's housekeeping every ``interval`` seconds, in a worker thread: never on
        send()'s path. Nothing ends this loop but stopping (SQLite's write-ahead log would
        only grow without it)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.outbox.checkpoint)
            except (RouterError, RuntimeError) as exc:  # disk full, file gone, closing: later
                log.debug("outbox_checkpoint_skipped", error=f"{type(exc).__name__}: {exc}")
            except Exception as exc:
                log.error("outbox_checkpoint_failed", error=f"{type(exc).__name__}: {exc}")

    def _notify_progress(self) -> None:
        with self._progress:
            self._progress.notify_all()

    def _wait_progress(self, timeout: float) -> None:
        with self._progress:
            self._progress.wait(timeout)

    # -- accepting events ---------------------------------------------------------------------

    def enqueue(
        self, event: Event, destinations: Sequence[str], connection: object | None = None
    ) -> None:
        """Record ``event`` for ``destinations``; return once it is stored.

        Raises ``OutboxFullError`` when there is no room (at once with ``when_full =
        "refuse"``, after ``block_timeout`` with ``"block"``). With ``connection`` (an app's
        open PostgreSQL transaction) the event is written in that transaction instead: see
        ``enqueue_in_transaction``.
        """
        if connection is not None:
            self.enqueue_in_transaction(event, destinations, connection)
            return
        if not destinations:
            return
        if self._started_pid is None:  # first use in this process (a fork resets it)
            self.start()
        settings = self.settings
        payload = event.stored_json()
        max_bytes = self._max_bytes
        # UTF-8 takes at most 4 bytes a character: most events need no byte count here.
        if len(payload) * 4 > max_bytes and (size := len(payload.encode())) > max_bytes:
            raise OutboxFullError(
                f"event {event.message_id!r} is {size:,} bytes, more than the whole outbox "
                f"may hold (max_bytes = {max_bytes:,})",
                limit="max_bytes",
                value=max_bytes,
                stored=0,
            )
        deadline: float | None = None
        while True:
            full = self.outbox.enqueue(
                event.message_id,
                payload,
                destinations,
                now=time.time(),
                max_events=settings.max_events,
                max_bytes=max_bytes,
            )
            if full is None:
                break
            if deadline is None:
                deadline = time.monotonic() + settings.block_timeout
            remaining = deadline - time.monotonic()
            if settings.when_full == "refuse" or remaining <= 0:
                raise _full_error(full, settings, self.outbox.location)
            self._wait_progress(min(_WAIT_POLL_S, remaining))
        if self._deferred:
            return
        for name in destinations:
            worker = self._workers.get(name)
            if worker is not None:
                worker.hint()

    def _stored(self, events: Sequence[AcceptedEvent]) -> None:
        """Events the spool moved into the outbox: hint each destination's worker once."""
        counts = Counter(name for event in events for name in event.destinations)
        workers = self._workers
        for name, count in counts.items():
            worker = workers.get(name)
            if worker is not None:
                worker.hint(count)

    def enqueue_in_transaction(
        self, event: Event, destinations: Sequence[str], connection: object
    ) -> None:
        """Write ``event`` in the caller's open transaction on ``connection``: delivered once
        that transaction commits, never if it rolls back. Needs the PostgreSQL outbox.

        A full outbox raises ``OutboxFullError`` at once, whatever ``when_full`` says:
        waiting would keep the caller's transaction (and its locks) open.
        """
        outbox = self.outbox
        if not isinstance(outbox, TransactionalOutbox):
            raise TransactionalSendError(
                f"send(connection=...) writes the event in the app's PostgreSQL transaction; "
                f"this router's outbox is {self.settings.backend} ({outbox.location}). "
                'Set [queue] url = "postgresql://..." to the database the app writes to'
            )
        if self._started_pid is None:
            self.start()
        payload = event.stored_json()
        full = outbox.enqueue_in(
            connection,
            event.message_id,
            payload,
            destinations,
            max_events=self.settings.max_events,
            max_bytes=self._max_bytes,
        )
        if full is not None:
            raise _full_error(full, self.settings.model_copy(update={"when_full": "refuse"}),
                              self.outbox.location)  # fmt: skip
        # No hint: the rows are invisible to the workers until the app commits, which may be
        # long after this returns; they poll for them.

    def deliver_here(self, tasks_per_destination: int = 1) -> None:
        """Start delivering in this process even if ``[queue] deliver = false`` said not to,
        with ``tasks_per_destination`` batches at once per destination (what
        ``event-router worker`` runs: its router is built not to start, then this starts it)."""
        self.settings = self.settings.model_copy(update={"deliver": True})
        self._delivery_only = True  # nothing is sent here: the workers are never hinted
        self._tasks = max(1, tasks_per_destination)
        self._started_pid = None
        self.start()

    def worker_counts(self) -> tuple[int, int]:
        """Rows this process's workers delivered and failed so far (``event-router worker``)."""
        workers = [*self._workers.values(), *self._retired]
        return sum(w.delivered for w in workers), sum(w.failed for w in workers)

    def stop_delivery(self, grace: float) -> None:
        """Stop claiming; let batches in flight finish for up to ``grace`` seconds, then
        cancel them (their rows are released for another worker). No drain of the outbox:
        what ``event-router worker`` does on SIGTERM. ``close()`` afterwards closes the rest."""
        if self._started_pid != os.getpid() or self._closed:
            return
        self._retired = list(self._workers.values())  # their counts stay readable
        with contextlib.suppress(RuntimeError, TimeoutError):
            self._runtime.run(self._stop_workers(grace), timeout=grace + _STOP_GRACE_S)
        self._started_pid = None
        self._delivery_stopped = True  # start() must not bring them back

    # -- flushing and closing -----------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> FlushResult:
        """Wait until every event accepted so far is delivered or dead, or ``timeout`` passes.

        With ``[queue] deliver = false`` it raises ``DeliveryDisabledError`` at once: this
        process delivers nothing, so it cannot wait for delivery.
        """
        if not self.settings.deliver:
            raise DeliveryDisabledError(
                "flush() cannot wait for delivery: [queue] deliver = false, so this process "
                "only enqueues and `event-router worker` processes deliver. Watch "
                "`event-router outbox status` instead"
            )
        if self._runtime.in_loop_thread():
            raise RuntimeError("flush() called from the router's own event loop (a plugin?)")
        self.start()
        names = self._names
        up_to = self.outbox.high_water()
        deadline = None if timeout is None else time.monotonic() + timeout
        timed_out = False
        with self._start_lock:
            self._flushing += 1
        self._wake_workers()
        try:
            while self.outbox.any_pending(names, up_to):
                remaining = _WAIT_POLL_S * 2
                if deadline is not None:
                    remaining = min(remaining, deadline - time.monotonic())
                    if remaining <= 0:
                        timed_out = True
                        break
                self._wait_progress(remaining)
        finally:
            with self._start_lock:
                self._flushing -= 1
        result = FlushResult(
            pending=self.outbox.pending(names, up_to),
            dead=self.outbox.dead_counts(names),
            timed_out=timed_out,
        )
        if result.complete:
            # Everything went: leave the storage small rather than at its peak size.
            try:
                self.outbox.trim()
            except RouterError as exc:  # busy, or the disk is full: the housekeeper retries
                log.debug("outbox_checkpoint_skipped", error=f"{type(exc).__name__}: {exc}")
        return result

    def _wake_workers(self) -> None:
        for worker in list(self._workers.values()):
            worker.wake()

    def close(self, timeout: float | None = None) -> FlushResult | None:
        """Drain for up to ``timeout`` seconds (``close_timeout`` by default), then stop.

        Returns what the drain left, or ``None`` when no worker ran in this process.
        """
        if self._closed:
            return None
        budget = self.settings.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + budget
        result: FlushResult | None = None
        if self._started_pid == os.getpid() and self.settings.deliver:
            try:
                result = self.flush(budget)
            except RouterError as exc:  # the outbox file is unusable: close all the same
                log.error("outbox_close_without_drain", outbox=self.outbox.location, error=str(exc))
            finally:
                self._closed = True
                grace = min(_STOP_GRACE_S, max(0.0, deadline - time.monotonic()))
                # The loop is already gone, or stuck in a plugin's blocking call.
                with contextlib.suppress(RuntimeError, TimeoutError):
                    self._runtime.run(self._stop_workers(grace), timeout=grace + _STOP_GRACE_S)
            if result is not None:
                self._report_leftovers(result)
        self._closed = True
        self.outbox.close()
        _live.discard(self)
        return result

    async def _stop_workers(self, grace: float) -> None:
        housekeeper, self._housekeeper = self._housekeeper, None
        if housekeeper is not None:
            housekeeper.cancel()
            await asyncio.gather(housekeeper, return_exceptions=True)
        workers = list(self._workers.values())
        self._workers = {}
        for worker in workers:
            worker.stop()
        tasks = [w.task for w in workers if w.task is not None]
        if not tasks:
            return
        _, still_running = await asyncio.wait(tasks, timeout=grace)
        for task in still_running:
            task.cancel()  # the claim is released; the rows are sent again later
        await asyncio.gather(*tasks, return_exceptions=True)

    def _report_leftovers(self, result: FlushResult) -> None:
        if result.complete:
            return
        left = {name: count for name, count in result.pending.items() if count}
        if not self.outbox.durable:
            log.error("outbox_events_lost", pending=left, outbox=self.outbox.location)
        else:
            log.warning(
                "outbox_closed_with_pending",
                pending=left,
                outbox=self.outbox.location,
                note="delivered by the next router that opens this outbox",
            )

    # -- fork -----------------------------------------------------------------------------

    def _before_fork(self) -> None:
        # The outbox takes whatever locks a thread of ours could hold inside it mid-fork.
        self.outbox.before_fork()

    def _after_fork_in_parent(self) -> None:
        self.outbox.after_fork_in_parent()

    def _after_fork_in_child(self) -> None:
        self._workers = {}  # they ran on the parent's loop, which does not exist here
        self._rebuilt = RebuiltEvents(_REBUILT_EVENTS)
        self._housekeeper = None
        self._started_pid = None
        self._start_lock = threading.Lock()
        self._progress = threading.Condition()
        self._flushing = 0
        self.outbox.after_fork_in_child()


def _full_error(
    full: tuple[str, int, int], settings: QueueSettings, location: str
) -> OutboxFullError:
    limit, value, stored = full
    what = "events" if limit == "max_events" else "bytes"
    waited = (
        f'waited {settings.block_timeout:g}s for room (when_full = "block")'
        if settings.when_full == "block"
        else 'when_full = "refuse"'
    )
    return OutboxFullError(
        f"the outbox {location} is full: {stored:,} {what} stored, {limit} = {value:,}; "
        f"{waited}. The event was not accepted; nothing already accepted is lost.",
        limit=limit,
        value=value,
        stored=stored,
    )


_live: weakref.WeakSet[QueuedDelivery] = weakref.WeakSet()


def _before_fork() -> None:
    for queue in list(_live):
        queue._before_fork()


def _after_fork_in_parent() -> None:
    for queue in list(_live):
        queue._after_fork_in_parent()


def _after_fork_in_child() -> None:
    for queue in list(_live):
        queue._after_fork_in_child()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
