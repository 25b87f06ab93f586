"""The contract every outbox engine meets, as a pytest suite an engine's tests subclass.

Needs pytest (a test dependency, never a runtime one). In a test module::

    from router_core.testing.outbox_contract import OutboxContract

    class TestRedisOutbox(OutboxContract):
        def make_outbox(self) -> Outbox:
            return RedisOutbox(url)            # a fresh, empty outbox for each test

Every ``test_*`` method then runs against it. ``make_outbox`` may use ``self.tmp_path`` (a
fresh directory) and ``self.request`` (pytest's ``FixtureRequest``, for the engine's own
fixtures: ``self.request.getfixturevalue("my_server")``); the suite closes the outbox after
each test (``close()`` must be safe to call twice).

**Time.** The tests tell the outbox that time went on by passing later ``now`` values
(``now=NOW + 31``). An engine that keeps its own clock (a database server's) returns a
``ClockedOutbox`` from ``make_outbox``: a wrapper that forwards every call and, when ``now``
moves on, calls the engine's ``move_stored_times_back(seconds)`` hook, which shifts every time
the outbox has stored back by as much: to the outbox, exactly as if its clock had moved on.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from router_core.limits import BatchLimits
from router_core.outbox.forwarding import ForwardingOutbox
from router_core.outbox.store import ClaimedRow, Outbox, OutboxStats

__all__ = ["LIMITS", "NOW", "ClockedOutbox", "OutboxContract"]

LIMITS = BatchLimits(max_events=100, max_request_bytes=500_000, max_event_bytes=32_000)
NOW = 1_700_000_000.0
"""The made-up time every test starts at."""


class OutboxContract:
    """The shared tests; subclass it as ``Test<Engine>`` and implement ``make_outbox``."""

    request: pytest.FixtureRequest
    tmp_path: Path
    destinations: ClassVar[tuple[str, ...]] = ("a", "b")

    def make_outbox(self) -> Outbox:
        """A new, empty outbox of the engine under test."""
        raise NotImplementedError("subclasses of OutboxContract implement make_outbox()")

    @pytest.fixture
    def outbox(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
        self.request, self.tmp_path = request, tmp_path
        outbox = self.make_outbox()
        yield outbox
        outbox.close()

    # -- helpers ------------------------------------------------------------------------------

    @staticmethod
    def put(outbox: Outbox, n: int, destinations: Sequence[str] = ("a", "b"), **kw: int) -> None:
        """Store ``n`` events ``m0``, ``m1``, ... (ids 1, 2, ...) for ``destinations``."""
        for i in range(n):
            payload = f'{{"type":"track","event":"E","user_id":"u","message_id":"m{i}"}}'
            full = outbox.enqueue(
                f"m{i}",
                payload,
                destinations,
                now=kw.get("now", NOW),
                max_events=kw.get("max_events"),
                max_bytes=kw.get("max_bytes"),
            )
            assert full is None

    @staticmethod
    def claim(
        outbox: Outbox, destination: str, token: str, now: float = NOW, **kw: float
    ) -> list[str]:
        """Claim with a ``lease`` (30 s) and ``batch_size`` (100); the message ids claimed."""
        rows = outbox.claim(
            destination,
            limits=LIMITS,
            batch_size=int(kw.get("batch_size", 100)),
            token=token,
            now=now,
            lease_until=now + kw.get("lease", 30),
            schedule_horizon=kw.get("schedule_horizon"),
            lease_horizon=kw.get("lease_horizon"),
        )
        return [r.message_id for r in rows]

    # -- delivery -----------------------------------------------------------------------------

    def test_each_destination_is_acknowledged_on_its_own(self, outbox: Outbox) -> None:
        self.put(outbox, 3)
        assert self.claim(outbox, "a", "t1") == ["m0", "m1", "m2"]
        outbox.ack("a", "t1", [1, 2, 3])
        assert outbox.pending(["a", "b"]) == {"a": 0, "b": 3}
        # b failing never brings a's rows back.
        assert self.claim(outbox, "b", "t2") == ["m0", "m1", "m2"]
        outbox.retry(
            "b", "t2", [1, 2, 3], next_attempt_at=NOW + 5, error="HTTP 503", status_code=503,
            now=NOW,
        )  # fmt: skip
        assert self.claim(outbox, "a", "t3", now=NOW + 10) == []
        assert self.claim(outbox, "b", "t4", now=NOW + 10) == ["m0", "m1", "m2"]
        outbox.ack("b", "t4", [1, 2, 3])
        stats = outbox.stats(NOW + 10)
        assert (stats.events, stats.bytes) == (0, 0)  # the payload went with the last row

    def test_payload_is_stored_once_and_kept_until_every_destination_is_done(
        self, outbox: Outbox
    ) -> None:
        self.put(outbox, 2, destinations=("a", "b", "c"))
        before = outbox.stats(NOW)
        assert before.events == 2
        assert before.bytes > 0
        assert self.claim(outbox, "a", "t") == ["m0", "m1"]
        outbox.ack("a", "t", [1, 2])
        assert outbox.stats(NOW).events == 2
        assert self.claim(outbox, "b", "t2") == ["m0", "m1"]
        outbox.dead("b", "t2", [1], error="HTTP 400", status_code=400, now=NOW)
        outbox.ack("b", "t2", [2])
        assert self.claim(outbox, "c", "t3") == ["m0", "m1"]
        outbox.ack("c", "t3", [1, 2])
        after = outbox.stats(NOW)
        assert after.events == 1  # m0 is still needed by b's dead letter
        assert after.counts == {"b": {"dead": 1}}

    def test_claimed_rows_are_not_claimed_again_until_the_lease_runs_out(
        self, outbox: Outbox
    ) -> None:
        self.put(outbox, 4)
        assert self.claim(outbox, "a", "first", batch_size=2) == ["m0", "m1"]
        assert self.claim(outbox, "a", "second") == ["m2", "m3"]
        assert self.claim(outbox, "a", "third") == []
        # The holder died: after its lease, another worker takes the rows.
        assert self.claim(outbox, "a", "fourth", now=NOW + 31) == ["m0", "m1", "m2", "m3"]
        # The first holder's late answer cannot touch rows now held by someone else.
        outbox.ack("a", "first", [1, 2])
        assert outbox.pending(["a"]) == {"a": 4}

    def test_a_batch_is_settled_in_parts(self, outbox: Outbox) -> None:
        # As a worker splitting a refused batch does: parts of one claim, one token.
        self.put(outbox, 6)
        assert self.claim(outbox, "a", "t") == ["m0", "m1", "m2", "m3", "m4", "m5"]
        outbox.ack("a", "t", [1, 2])
        outbox.dead("a", "t", [3], error="HTTP 400", status_code=400, now=NOW)
        outbox.ack("a", "t", [4])
        outbox.retry(
            "a", "t", [5], next_attempt_at=NOW + 60, error="HTTP 503", status_code=503, now=NOW
        )
        outbox.release("a", "t")  # 6 was never settled
        assert outbox.stats(NOW).counts["a"] == {"dead": 1, "retrying": 1, "pending": 1}
        assert outbox.pending(["a", "b"]) == {"a": 2, "b": 6}
        assert self.claim(outbox, "a", "u") == ["m5"]
        outbox.ack("a", "u", [6])
        assert self.claim(outbox, "a", "v", now=NOW + 60) == ["m4"]
        outbox.ack("a", "v", [5])
        assert self.claim(outbox, "b", "w") == ["m0", "m1", "m2", "m3", "m4", "m5"]
        outbox.ack("b", "w", [1, 2, 3, 4, 5, 6])
        stats = outbox.stats(NOW + 60)
        assert stats.counts == {"a": {"dead": 1}}
        assert stats.events == 1  # kept for the dead letter only

    def test_settling_under_another_token_changes_nothing(self, outbox: Outbox) -> None:
        self.put(outbox, 2)
        assert self.claim(outbox, "a", "holder") == ["m0", "m1"]
        outbox.retry(
            "a", "stranger", [1], next_attempt_at=NOW + 60, error="x", status_code=None, now=NOW
        )
        outbox.dead("a", "stranger", [2], error="x", status_code=None, now=NOW)
        outbox.release("a", "stranger")
        assert self.claim(outbox, "a", "other") == []  # still held by "holder"
        assert outbox.dead_counts(["a"]) == {"a": 0}
        outbox.ack("a", "holder", [1, 2])
        assert outbox.pending(["a"]) == {"a": 0}

    def test_extend_keeps_the_claim_and_release_hands_it_back(self, outbox: Outbox) -> None:
        self.put(outbox, 2)
        assert self.claim(outbox, "a", "t", lease=10) == ["m0", "m1"]
        outbox.extend("a", "t", NOW + 100)
        assert self.claim(outbox, "a", "other", now=NOW + 50) == []
        outbox.release("a", "t")
        assert self.claim(outbox, "a", "other", now=NOW + 50) == ["m0", "m1"]

    def test_retry_counts_attempts_and_waits(self, outbox: Outbox) -> None:
        self.put(outbox, 1)
        self.claim(outbox, "a", "t")
        outbox.retry(
            "a", "t", [1], next_attempt_at=NOW + 60, error="HTTP 503", status_code=503, now=NOW
        )
        assert self.claim(outbox, "a", "t2", now=NOW + 59) == []
        rows = outbox.claim(
            "a", limits=LIMITS, batch_size=10, token="t3", now=NOW + 60, lease_until=NOW + 90
        )
        assert [r.attempts for r in rows] == [1]
        stats = outbox.stats(NOW + 61)
        assert stats.counts["a"] == {"in_flight": 1}
        assert stats.counts["b"] == {"pending": 1}

    def test_claims_fit_the_request_limits(self, outbox: Outbox) -> None:
        self.put(outbox, 10)
        small = BatchLimits(max_events=3, max_request_bytes=500_000, max_event_bytes=32_000)
        rows = outbox.claim(
            "a", limits=small, batch_size=100, token="t", now=NOW, lease_until=NOW + 5
        )
        assert len(rows) == 3

    # -- a wall clock that stepped back -------------------------------------------------------

    def test_claim_takes_rows_scheduled_past_the_horizon(self, outbox: Outbox) -> None:
        self.put(outbox, 2, destinations=("d",))
        [first, second] = outbox.claim(
            "d", limits=LIMITS, batch_size=10, token="a", now=NOW, lease_until=NOW + 60
        )
        outbox.retry(
            "d", "a", [first.event_id], next_attempt_at=NOW + 10, error="503", status_code=503,
            now=NOW,
        )  # fmt: skip
        outbox.retry(
            "d", "a", [second.event_id], next_attempt_at=NOW + 5000, error="503",
            status_code=503, now=NOW,
        )  # fmt: skip
        # The first row waits its backoff; the second is implausibly far ahead (the longest
        # backoff is 300 s): it was scheduled before the clock stepped back.
        taken = self.claim(outbox, "d", "b", schedule_horizon=NOW + 305, lease_horizon=NOW + 65)
        assert taken == [second.message_id]
        # Without horizons every stored time is trusted.
        outbox.release("d", "b")
        assert self.claim(outbox, "d", "c") == []

    def test_claim_takes_rows_whose_lease_ends_past_the_horizon(self, outbox: Outbox) -> None:
        self.put(outbox, 2, destinations=("d",))
        assert self.claim(outbox, "d", "a", batch_size=1, lease=60) == ["m0"]
        assert self.claim(outbox, "d", "b", batch_size=1, lease=3660) == ["m1"]
        # "a" still holds a live 60 s lease; "b"'s lease runs past anything a worker takes
        # (it was written before the clock stepped back an hour).
        taken = self.claim(outbox, "d", "c", schedule_horizon=NOW + 305, lease_horizon=NOW + 65)
        assert taken == ["m1"]

    # -- dead letters, limits, counts ---------------------------------------------------------

    def test_dead_letters_are_replayed_and_purged(self, outbox: Outbox) -> None:
        self.put(outbox, 3)
        self.claim(outbox, "a", "t")
        outbox.dead("a", "t", [1, 2], error="HTTP 400: bad", status_code=400, now=NOW)
        outbox.ack("a", "t", [3])
        assert outbox.dead_counts(["a", "b"]) == {"a": 2, "b": 0}
        assert outbox.pending(["a"]) == {"a": 0}
        assert outbox.replay("a", NOW) == 2
        assert outbox.dead_counts(["a"]) == {"a": 0}
        rows = outbox.claim(
            "a", limits=LIMITS, batch_size=10, token="t2", now=NOW, lease_until=NOW + 1
        )
        assert [(r.message_id, r.attempts) for r in rows] == [("m0", 0), ("m1", 0)]
        outbox.dead("a", "t2", [1, 2], error="again", status_code=400, now=NOW)
        assert outbox.purge(dead_only=True, destination=None) == 2
        assert outbox.stats(NOW).counts == {"b": {"pending": 3}}
        assert outbox.purge(dead_only=False, destination="b") == 3
        assert outbox.stats(NOW).events == 0

    def test_limits_refuse_without_storing(self, outbox: Outbox) -> None:
        self.put(outbox, 2, max_events=2)
        assert outbox.enqueue("m9", "{}", ["a"], now=NOW, max_events=2, max_bytes=None) == (
            "max_events",
            2,
            2,
        )
        used = outbox.stats(NOW).bytes
        full = outbox.enqueue("m9", "x" * 100, ["a"], now=NOW, max_events=None, max_bytes=used + 99)
        assert full == ("max_bytes", used + 99, used)
        assert outbox.stats(NOW).events == 2
        assert outbox.high_water() == 2

    def test_pending_up_to_counts_only_older_events(self, outbox: Outbox) -> None:
        self.put(outbox, 5)
        assert outbox.pending(["a"], up_to=3) == {"a": 3}
        assert outbox.any_pending(["a"], up_to=3)
        self.claim(outbox, "a", "t")
        outbox.ack("a", "t", [1, 2, 3])
        assert not outbox.any_pending(["a"], up_to=3)
        assert outbox.any_pending(["a"])

    # -- what the queue asks of the engine ----------------------------------------------------

    def test_housekeeping_and_trim_keep_every_row(self, outbox: Outbox) -> None:
        interval = outbox.housekeeping_interval
        assert interval is None or interval > 0
        assert isinstance(outbox.durable, bool)
        assert outbox.location
        self.put(outbox, 2)
        outbox.checkpoint()
        outbox.trim()
        assert outbox.pending(["a", "b"]) == {"a": 2, "b": 2}
        assert self.claim(outbox, "a", "t") == ["m0", "m1"]

    def test_the_parent_goes_on_after_a_fork(self, outbox: Outbox) -> None:
        self.put(outbox, 2)
        outbox.before_fork()
        outbox.after_fork_in_parent()
        self.put(outbox, 1, destinations=("c",))
        assert self.claim(outbox, "a", "t") == ["m0", "m1"]
        assert outbox.pending(["a", "b", "c"]) == {"a": 2, "b": 2, "c": 1}

    def test_a_forked_child_sees_the_stored_rows_only_when_durable(self, outbox: Outbox) -> None:
        self.put(outbox, 2)
        self.claim(outbox, "a", "parent-worker")
        outbox.before_fork()
        outbox.after_fork_in_child()  # as in the child: what the parent held is dropped
        expected = 2 if outbox.durable else 0
        assert outbox.pending(["a", "b"]) == {"a": expected, "b": expected}
        assert self.claim(outbox, "b", "child-worker") == ["m0", "m1"][:expected]
        self.put(outbox, 1, destinations=("c",))  # and it stores events of its own
        assert outbox.pending(["c"]) == {"c": 1}

    def test_close_twice_is_safe(self, outbox: Outbox) -> None:
        self.put(outbox, 1)
        outbox.close()
        outbox.close()  # and once more after the test


class ClockedOutbox(ForwardingOutbox[Outbox], abc.ABC):
    """Wraps an engine that reads its own clock so the suite's made-up times move it.

    Subclasses implement ``move_stored_times_back(seconds)``: shift every time the engine has
    stored (schedules, leases, accept times) back by ``seconds``. Every call is forwarded; a
    call whose ``now`` is later than the last one seen moves the stored times back first.
    ``extend()`` takes no ``now``: its ``lease_until`` is handed on as the same length after
    ``time.time()``, which is what an engine measuring lengths must be given.
    """

    def __init__(self, inner: Outbox) -> None:
        super().__init__(inner)
        self._clock: float | None = None

    @abc.abstractmethod
    def move_stored_times_back(self, seconds: float) -> None:
        """Make every stored time ``seconds`` earlier."""

    def _at(self, now: float) -> None:
        if self._clock is not None and now != self._clock:
            self.move_stored_times_back(now - self._clock)
        self._clock = now

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
        self._at(now)
        return super().enqueue(
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
        self._at(now)
        return super().claim(
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
        clock = self._clock if self._clock is not None else lease_until
        super().extend(destination, token, time.time() + (lease_until - clock))

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
        self._at(now)
        super().retry(
            destination, token, event_ids, next_attempt_at=next_attempt_at, error=error,
            status_code=status_code, now=now,
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
        self._at(now)
        super().dead(destination, token, event_ids, error=error, status_code=status_code, now=now)

    def stats(self, now: float) -> OutboxStats:
        self._at(now)
        return super().stats(now)

    def replay(self, destination: str | None, now: float) -> int:
        self._at(now)
        return super().replay(destination, now)
