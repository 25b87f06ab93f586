"""The background worker: one asyncio task per destination, on the router's own loop.

Why tasks on the router's loop rather than threads: the pooled ``httpx.AsyncClient`` (and
every async plugin) belongs to that loop; a task per destination keeps destinations
independent (one backing off or hanging never delays another) without a thread each.

Each round the task claims the oldest due rows that fit one request, delivers them (one
``send_batch`` request, or ``send_event`` per row, a few at a time), and records the outcome
per row: acknowledged rows are deleted, transient failures are rescheduled with backoff
(``next_attempt_at``; the destination pauses until then), permanent failures are
dead-lettered. A batch refused permanently (400, 413, or a plugin's own refusal) is split in
halves until the events at fault are isolated, so the good ones are still delivered.

Transforms run here, at delivery, on the event as stored (once, whatever the destinations):
the same event and config give the same output in every process and retry. A row a
transform drops is acknowledged (logged as ``outbox_transform_dropped``), one whose transform
fails goes to the dead letter with the reason. Each attempt and each dead letter is told to
the observers (``delivery_attempted``, ``dead_lettered``, the router's ``on_error``).

Two clocks: every wait in this process (backoff pauses, lease renewals, polling) runs on the
monotonic clock, which the wall clock stepping back cannot stretch; times stored in the outbox
(``next_attempt_at``, leases) are wall-clock Unix seconds, as other processes read them. A
stored time further ahead than any backoff or lease could have put it was written before the
wall clock stepped back: ``claim()`` is told the horizons and treats such rows as due.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from router_core.delivery import Outcome, attempt_limit, deliver_batch, deliver_event
from router_core.destination import Destination
from router_core.errors import InvalidEventError
from router_core.events import Event
from router_core.logs import get_logger
from router_core.observers import NO_OBSERVERS, Observers
from router_core.outbox.rebuilt import RebuiltEvents
from router_core.outbox.store import ENVELOPE_BYTES, ClaimedRow, Outbox, estimate_bytes
from router_core.plugins import LoadedPlugin
from router_core.retry import backoff_delay
from router_core.settings import QueueSettings
from router_core.splitting import deliver_splitting
from router_core.transforms import TransformPipeline

__all__ = ["Clock", "DestinationWorker"]

_ERROR_PAUSE_S = 1.0  # after an unexpected error (e.g. the disk is full), before trying again
_FLUSH_POLL_S = 0.05  # while a flush waits: how often to look for rows other processes free
# Slack on the horizons of stored times: processes sharing an outbox may have been set up a
# little differently (another timeout, so another lease).
_HORIZON_SLACK_S = 5.0


@dataclass(frozen=True, slots=True)
class Clock:
    """The worker's clocks: ``wall`` (Unix seconds) for times stored in the outbox,
    ``monotonic`` for waits in this process. Tests pass their own to step the wall clock."""

    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


_Prepared = tuple[ClaimedRow, tuple[Event, ...]]
"""A claimed row and the events its transforms made of it (just its own, without any)."""

system_clock = Clock()
"""The clock a worker uses unless it is given one (tests replace it to step the wall clock)."""


class DestinationWorker:
    """Delivers one destination's rows from the outbox. Runs on the router's loop."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        plugin: LoadedPlugin,
        destination: Destination[Any],
        settings: QueueSettings,
        rebuilt: RebuiltEvents,
        is_flushing: Callable[[], bool],
        on_progress: Callable[[], None],
        clock: Clock | None = None,
        transforms: TransformPipeline | None = None,
        observers: Observers = NO_OBSERVERS,
        hinted: bool = True,
    ) -> None:
        self.name = destination.name
        self.clock = clock if clock is not None else system_clock
        self._outbox = outbox
        self._plugin = plugin
        self._destination = destination
        self._settings = settings
        self._rebuilt = rebuilt
        self._is_flushing = is_flushing
        self._on_progress = on_progress
        self._transforms = transforms
        self._observers = observers
        self._log = get_logger("event_router.outbox").bind(
            destination=destination.name, plugin=destination.plugin
        )
        self._limits = plugin.limits_for(destination.settings)
        self._batch_size = max(1, min(settings.batch_size, self._limits.max_events))
        # A claim must outlive the request it covers; it is renewed before every attempt.
        self._lease = max(settings.lease, attempt_limit(destination) + 1.0)
        # The furthest ahead a backoff (this config's) can schedule a row.
        self._longest_delay = max(settings.retry.backoff_max, settings.retry.retry_after_max)
        # How often to look for rows nobody told us of (another process's, retries due). A
        # worker that send() never hints (``event-router worker``) looks every flush_interval,
        # so that a partial batch waits no longer there than in the sending process.
        self._poll = max(settings.flush_interval, 1.0) if hinted else settings.flush_interval
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        # Hints from send(): how many events arrived since the last claim, and since when.
        self._hint_lock = threading.Lock()
        self._hint = 0
        self._hint_since = 0.0
        self._last_empty: float | None = None  # when a claim last found nothing due
        self._paused_until = 0.0  # monotonic: the destination is backing off until then
        # Consecutive transient failures of the destination: backoff keeps growing through a
        # long outage even as new rows (with no attempts of their own) come up for sending.
        self._failures = 0
        self._token: str | None = None
        self._lease_until = 0.0  # monotonic: when the current claim's lease runs out
        self._max_in_flight = destination.routing.max_in_flight
        self.delivered = 0  # rows acknowledged by this worker
        self.failed = 0  # rows whose attempt failed (rescheduled or dead-lettered)
        self.task: asyncio.Task[None] | None = None

    # -- called from any thread ---------------------------------------------------------------

    def hint(self, count: int = 1) -> None:
        """``count`` events for this destination were just stored (thread-safe, cheap).

        Only two hints wake the worker: the first after a claim (it starts the
        ``flush_interval`` clock) and the one that makes a full batch. Waking the loop for
        every event would cost a write to the loop's self-pipe, and the loop thread a trip
        through the GIL, per event.
        """
        with self._hint_lock:
            before = self._hint
            self._hint = after = before + count
            if before == 0:
                self._hint_since = self.clock.monotonic()
        if before == 0 or before < self._batch_size <= after:
            self.wake()

    def wake(self) -> None:
        """Look at the outbox now (thread-safe): a flush started or the worker must stop."""
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- on the loop --------------------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current round, then end (on the loop)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                delay = self._ready_in()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), delay)
                    continue
                await self._round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._loop.is_running():
                    # The loop is gone and this task is being finalised (a close() that found
                    # the loop stuck in a plugin): going round again would spin forever.
                    return
                # The outbox itself failed (disk full, file locked too long): keep going.
                self._log.error("outbox_worker_error", error=f"{type(exc).__name__}: {exc}")
                self._paused_until = self.clock.monotonic() + _ERROR_PAUSE_S

    def _ready_in(self) -> float:
        """Seconds until the next round is due (0: now)."""
        now = self.clock.monotonic()
        backoff = self._paused_until - now
        if backoff > 0:
            return backoff
        flushing = self._is_flushing()
        if self._hint >= self._batch_size or (self._hint and flushing):
            return 0.0
        if self._last_empty is None:
            return 0.0  # the last round took a full batch: there may be more
        wait = self._last_empty + (_FLUSH_POLL_S if flushing else self._poll) - now
        if self._hint:
            wait = min(wait, self._hint_since + self._settings.flush_interval - now)
        return wait

    async def _round(self) -> None:
        token = f"{os.getpid()}-{uuid.uuid4().hex}"
        now = self.clock.wall()
        claimed_at = self.clock.monotonic()
        seen = self._hint  # events hinted before the claim: it sees all of them
        rows = self._outbox.claim(
            self.name,
            limits=self._limits,
            batch_size=self._batch_size,
            token=token,
            now=now,
            lease_until=now + self._lease,
            schedule_horizon=now + self._longest_delay + _HORIZON_SLACK_S,
            lease_horizon=now + self._lease + _HORIZON_SLACK_S,
            max_in_flight=self._max_in_flight,
        )
        full = self._full(rows)
        with self._hint_lock:
            # Everything due was taken unless the batch is full: what is left to hint about
            # came in during the claim, and its clock starts now.
            self._hint = max(0, self._hint - (len(rows) if full else seen))
            if self._hint:
                self._hint_since = self.clock.monotonic()
        self._last_empty = None if full else self.clock.monotonic()
        if not rows:
            return
        self._token, self._lease_until = token, claimed_at + self._lease
        delivered, failed = self.delivered, self.failed
        # Rows not settled (a transient failure stopped the round, or cancellation) go back at
        # once rather than when the lease runs out.
        try:
            await self._deliver(rows)
        except BaseException:
            self._token = None
            # What stopped the round (a cancellation above all) must not be replaced by an
            # error handing the rows back (the outbox closed under a stuck worker, say): the
            # lease frees them then.
            with contextlib.suppress(Exception):
                self._outbox.release(self.name, token)
            self._on_progress()
            raise
        self._token = None
        self._outbox.release(self.name, token)
        self._on_progress()
        self._log.debug(
            "outbox_batch",
            events=len(rows),
            delivered=self.delivered - delivered,
            failed=self.failed - failed,
            duration_ms=round((self.clock.monotonic() - claimed_at) * 1000, 1),
        )

    def _full(self, rows: Sequence[ClaimedRow]) -> bool:
        if len(rows) >= self._batch_size:
            return True
        budget = self._limits.max_request_bytes - ENVELOPE_BYTES
        return bool(rows) and sum(estimate_bytes(r.size) for r in rows) * 2 >= budget

    # -- delivering ---------------------------------------------------------------------------

    async def _deliver(self, rows: Sequence[ClaimedRow]) -> None:
        parsed: list[tuple[ClaimedRow, Event]] = []
        for row in rows:
            try:
                parsed.append((row, self._rebuilt.get(row)))
            except (ValueError, InvalidEventError) as exc:
                error = f"stored event {row.message_id!r} cannot be read: {exc}"
                self._dead([row], Outcome(success=False, attempts=1, duration_ms=0, error=error))
        prepared = self._transform(parsed)
        if not prepared:
            return
        if self._plugin.send_batch is not None:
            await self._send_batch(prepared)
        else:
            await self._send_each(prepared)

    def _transform(self, parsed: Sequence[tuple[ClaimedRow, Event]]) -> list[_Prepared]:
        """Apply the destination's transforms; settle rows dropped or failed by them."""
        if self._transforms is None:
            return [(row, (event,)) for row, event in parsed]
        prepared: list[_Prepared] = []
        dropped: list[ClaimedRow] = []
        for row, event in parsed:
            outcome = self._transforms.apply(event)
            if outcome.error is not None:
                failed = Outcome(success=False, attempts=1, duration_ms=0, error=str(outcome.error))
                self._dead([row], failed)
            elif not outcome.events:
                dropped.append(row)
                self._log.info(
                    "outbox_transform_dropped", message_id=row.message_id, reason=outcome.dropped
                )
            else:
                prepared.append((row, outcome.events))
        if dropped:  # settled: not delivered, and never will be
            assert self._token is not None
            self._outbox.ack(self.name, self._token, [r.event_id for r in dropped])
            self._on_progress()
        return prepared

    def _renew(self) -> None:
        """Push back the lease when it could run out during the next attempt."""
        if self._token is None:
            return
        now = self.clock.monotonic()
        if self._lease_until - now < attempt_limit(self._destination) + 0.5:
            self._lease_until = now + self._lease
            self._outbox.extend(self.name, self._token, self.clock.wall() + self._lease)

    async def _send_batch(self, batch: Sequence[_Prepared]) -> bool:
        """Deliver ``batch`` in one request, splitting it on a permanent refusal.

        Returns False when a transient failure paused the destination (stop the round).
        """

        async def send(part: Sequence[_Prepared]) -> Outcome:
            self._renew()
            return await deliver_batch(
                self._plugin,
                self._destination,
                [event for _, events in part for event in events],
                first_attempt=max(row.attempts for row, _ in part) + 1,
                observers=self._observers,
            )

        def settle(part: Sequence[_Prepared], outcome: Outcome) -> bool:
            rows = [row for row, _ in part]
            if outcome.success:
                self._ack(rows)
                return True
            if outcome.retryable:
                self._retry(rows, outcome)
                return False
            self._dead(rows, outcome)
            return True

        def on_split(size: int, outcome: Outcome) -> None:
            self._log.info(
                "outbox_batch_split",
                events=size,
                status_code=outcome.status_code,
                error=outcome.error,
            )

        return await deliver_splitting(batch, send, settle, on_split)

    async def _send_each(self, batch: Sequence[_Prepared]) -> None:
        """Deliver rows one request each, ``concurrency`` at a time (no ``send_batch``).

        A row a transform split into several events sends them in turn; the first failure
        is the row's outcome.
        """
        gate = asyncio.Semaphore(self._settings.concurrency)

        async def one(row: ClaimedRow, events: Sequence[Event]) -> Outcome:
            async with gate:
                for event in events:
                    self._renew()
                    outcome = await deliver_event(
                        self._plugin,
                        self._destination,
                        event,
                        first_attempt=row.attempts + 1,
                        observers=self._observers,
                    )
                    if not outcome.success:
                        break
                return outcome

        outcomes = await asyncio.gather(*(one(row, events) for row, events in batch))
        delivered: list[ClaimedRow] = []
        transient: list[tuple[ClaimedRow, Outcome]] = []
        for (row, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.success:
                delivered.append(row)
            elif outcome.retryable:
                transient.append((row, outcome))
            else:
                self._dead([row], outcome)
        if delivered:
            self._ack(delivered)
        if transient:
            # One backoff for the round, as long as the longest Retry-After asked for.
            worst = max(transient, key=lambda pair: pair[1].retry_after or 0.0)[1]
            self._retry([row for row, _ in transient], worst)

    # -- recording outcomes -------------------------------------------------------------------

    def _ack(self, rows: Sequence[ClaimedRow]) -> None:
        assert self._token is not None
        self._outbox.ack(self.name, self._token, [r.event_id for r in rows])
        self.delivered += len(rows)
        self._failures = 0
        self._on_progress()

    def _retry(self, rows: Sequence[ClaimedRow], outcome: Outcome) -> None:
        """Reschedule after a transient failure, or dead-letter rows out of budget."""
        assert self._token is not None
        policy = self._settings.retry
        now = self.clock.wall()
        attempt = max(self._failures, *(r.attempts for r in rows)) + 1
        self._failures = attempt
        delay = backoff_delay(policy, attempt, outcome.retry_after)
        next_attempt_at = now + delay
        # The destination as a whole backs off: a 503 or a 429 is rarely about one event.
        self._paused_until = max(self._paused_until, self.clock.monotonic() + delay)
        self._last_empty = None
        exhausted = [
            r
            for r in rows
            if r.attempts + 1 >= policy.max_attempts or now - r.since > policy.max_elapsed
        ]
        if exhausted:
            attempts = max(r.attempts for r in exhausted) + 1
            self._dead(
                exhausted,
                Outcome(
                    success=False,
                    attempts=attempts,
                    duration_ms=outcome.duration_ms,
                    status_code=outcome.status_code,
                    error=f"gave up after {attempts} attempt(s): {outcome.error}",
                ),
            )
        gone = {r.event_id for r in exhausted}
        waiting = [r.event_id for r in rows if r.event_id not in gone]
        self.failed += len(waiting)
        if waiting:
            self._outbox.retry(
                self.name,
                self._token,
                waiting,
                next_attempt_at=next_attempt_at,
                error=outcome.error or "failed",
                status_code=outcome.status_code,
                now=now,
            )
        self._log.info(
            "outbox_retry_scheduled",
            events=len(waiting),
            attempt=attempt,
            delay_s=round(delay, 3),
            status_code=outcome.status_code,
        )

    def _dead(self, rows: Sequence[ClaimedRow], outcome: Outcome) -> None:
        assert self._token is not None
        self._outbox.dead(
            self.name,
            self._token,
            [r.event_id for r in rows],
            error=outcome.error or "failed",
            status_code=outcome.status_code,
            now=self.clock.wall(),
        )
        self.failed += len(rows)
        self._log.error(
            "outbox_dead_letter",
            events=len(rows),
            message_id=rows[0].message_id,
            status_code=outcome.status_code,
            error=outcome.error,
        )
        self._on_progress()
        error = outcome.error or "failed"
        result = outcome.to_result(self._destination)
        for row in rows:
            self._observers.dead_lettered(self.name, row.message_id, error)
            self._observers.failed(row.message_id, result)
