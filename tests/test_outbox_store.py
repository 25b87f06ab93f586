"""The outbox backends (SQLite, in-memory, PostgreSQL) behave the same; SQLite's own guarantees."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from router_core.limits import BatchLimits
from router_core.outbox import MemoryOutbox, Outbox, SQLiteOutbox
from router_core.outbox.sqlite import SCHEMA_VERSION
from router_core.outbox.store import ENVELOPE_BYTES, estimate_bytes, plan_batch

LIMITS = BatchLimits(max_events=100, max_request_bytes=500_000, max_event_bytes=32_000)
NOW = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Outbox]:
    if request.param == "postgres":  # a real server (tests/postgres.py), or a skip saying how
        yield request.getfixturevalue("clocked_postgres_outbox")
        return
    outbox: Outbox = (
        SQLiteOutbox(tmp_path / "outbox.db") if request.param == "sqlite" else MemoryOutbox()
    )
    yield outbox
    outbox.close()


def put(store: Outbox, n: int, destinations: tuple[str, ...] = ("a", "b"), **kw: int) -> None:
    for i in range(n):
        payload = f'{{"type":"track","event":"E","user_id":"u","message_id":"m{i}"}}'
        full = store.enqueue(
            f"m{i}",
            payload,
            destinations,
            now=NOW,
            max_events=kw.get("max_events"),
            max_bytes=kw.get("max_bytes"),
        )
        assert full is None


def claim(store: Outbox, destination: str, token: str, now: float = NOW, **kw: int) -> list[str]:
    rows = store.claim(
        destination,
        limits=LIMITS,
        batch_size=kw.get("batch_size", 100),
        token=token,
        now=now,
        lease_until=now + kw.get("lease", 30),
    )
    return [r.message_id for r in rows]


def test_each_destination_is_acknowledged_on_its_own(store: Outbox) -> None:
    put(store, 3)
    assert claim(store, "a", "t1") == ["m0", "m1", "m2"]
    store.ack("a", "t1", [1, 2, 3])
    assert store.pending(["a", "b"]) == {"a": 0, "b": 3}
    # b failing never brings a's rows back.
    assert claim(store, "b", "t2") == ["m0", "m1", "m2"]
    store.retry(
        "b", "t2", [1, 2, 3], next_attempt_at=NOW + 5, error="HTTP 503", status_code=503, now=NOW
    )
    assert claim(store, "a", "t3", now=NOW + 10) == []
    assert claim(store, "b", "t4", now=NOW + 10) == ["m0", "m1", "m2"]
    store.ack("b", "t4", [1, 2, 3])
    stats = store.stats(NOW)
    assert (stats.events, stats.bytes) == (0, 0)  # the payload went with the last row


def test_payload_is_stored_once_and_kept_until_every_destination_is_done(store: Outbox) -> None:
    put(store, 2, destinations=("a", "b", "c"))
    before = store.stats(NOW)
    assert before.events == 2
    assert before.bytes > 0
    assert claim(store, "a", "t") == ["m0", "m1"]
    store.ack("a", "t", [1, 2])
    assert store.stats(NOW).events == 2
    assert claim(store, "b", "t2") == ["m0", "m1"]
    store.dead("b", "t2", [1], error="HTTP 400", status_code=400, now=NOW)
    store.ack("b", "t2", [2])
    assert claim(store, "c", "t3") == ["m0", "m1"]
    store.ack("c", "t3", [1, 2])
    after = store.stats(NOW)
    assert after.events == 1  # m0 is still needed by b's dead letter
    assert after.counts == {"b": {"dead": 1}}


def test_claimed_rows_are_not_claimed_again_until_the_lease_runs_out(store: Outbox) -> None:
    put(store, 4)
    assert claim(store, "a", "first", batch_size=2) == ["m0", "m1"]
    assert claim(store, "a", "second") == ["m2", "m3"]
    assert claim(store, "a", "third") == []
    # The holder died: after its lease, another worker takes the rows.
    assert claim(store, "a", "fourth", now=NOW + 31) == ["m0", "m1", "m2", "m3"]
    # The first holder's late answer cannot touch rows now held by someone else.
    store.ack("a", "first", [1, 2])
    assert store.pending(["a"]) == {"a": 4}


def test_extend_keeps_the_claim_and_release_hands_it_back(store: Outbox) -> None:
    put(store, 2)
    assert claim(store, "a", "t", lease=10) == ["m0", "m1"]
    store.extend("a", "t", NOW + 100)
    assert claim(store, "a", "other", now=NOW + 50) == []
    store.release("a", "t")
    assert claim(store, "a", "other", now=NOW + 50) == ["m0", "m1"]


def test_retry_counts_attempts_and_waits(store: Outbox) -> None:
    put(store, 1)
    claim(store, "a", "t")
    store.retry("a", "t", [1], next_attempt_at=NOW + 60, error="HTTP 503", status_code=503, now=NOW)
    assert claim(store, "a", "t2", now=NOW + 59) == []
    rows = store.claim(
        "a", limits=LIMITS, batch_size=10, token="t3", now=NOW + 60, lease_until=NOW + 90
    )
    assert [r.attempts for r in rows] == [1]
    stats = store.stats(NOW + 61)
    assert stats.counts["a"] == {"in_flight": 1}
    assert stats.counts["b"] == {"pending": 1}


def test_dead_letters_are_replayed_and_purged(store: Outbox) -> None:
    put(store, 3)
    claim(store, "a", "t")
    store.dead("a", "t", [1, 2], error="HTTP 400: bad", status_code=400, now=NOW)
    store.ack("a", "t", [3])
    assert store.dead_counts(["a", "b"]) == {"a": 2, "b": 0}
    assert store.pending(["a"]) == {"a": 0}
    assert store.replay("a", NOW) == 2
    assert store.dead_counts(["a"]) == {"a": 0}
    rows = store.claim("a", limits=LIMITS, batch_size=10, token="t2", now=NOW, lease_until=NOW + 1)
    assert [(r.message_id, r.attempts) for r in rows] == [("m0", 0), ("m1", 0)]
    store.dead("a", "t2", [1, 2], error="again", status_code=400, now=NOW)
    assert store.purge(dead_only=True, destination=None) == 2
    assert store.stats(NOW).counts == {"b": {"pending": 3}}
    assert store.purge(dead_only=False, destination="b") == 3
    assert store.stats(NOW).events == 0


def test_limits_refuse_without_storing(store: Outbox) -> None:
    put(store, 2, max_events=2)
    assert store.enqueue("m9", "{}", ["a"], now=NOW, max_events=2, max_bytes=None) == (
        "max_events",
        2,
        2,
    )
    used = store.stats(NOW).bytes
    full = store.enqueue("m9", "x" * 100, ["a"], now=NOW, max_events=None, max_bytes=used + 99)
    assert full == ("max_bytes", used + 99, used)
    assert store.stats(NOW).events == 2
    assert store.high_water() == 2


def test_pending_up_to_counts_only_older_events(store: Outbox) -> None:
    put(store, 5)
    assert store.pending(["a"], up_to=3) == {"a": 3}
    assert store.any_pending(["a"], up_to=3)
    claim(store, "a", "t")
    store.ack("a", "t", [1, 2, 3])
    assert not store.any_pending(["a"], up_to=3)
    assert store.any_pending(["a"])


def test_claims_fit_the_request_limits(store: Outbox) -> None:
    put(store, 10)
    small = BatchLimits(max_events=3, max_request_bytes=500_000, max_event_bytes=32_000)
    rows = store.claim("a", limits=small, batch_size=100, token="t", now=NOW, lease_until=NOW + 5)
    assert len(rows) == 3


# -- batch planning -------------------------------------------------------------------------


def test_plan_batch_respects_count_and_bytes() -> None:
    limits = BatchLimits(
        max_events=5, max_request_bytes=10_000 + ENVELOPE_BYTES, max_event_bytes=5000
    )
    assert plan_batch([100] * 10, limits, batch_size=100) == 5
    assert plan_batch([100] * 10, limits, batch_size=2) == 2
    size = 3000
    fits = 10_000 // estimate_bytes(size)
    assert plan_batch([size] * 10, limits, batch_size=100) == fits
    # An event estimated over the per-event limit goes alone; the destination decides.
    assert plan_batch([6000, 100, 100], limits, batch_size=100) == 1
    assert plan_batch([100, 6000, 100], limits, batch_size=100) == 1
    assert plan_batch([], limits, batch_size=100) == 0


# -- SQLite specifics -----------------------------------------------------------------------


def test_sqlite_file_is_wal_versioned_and_indexed(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    SQLiteOutbox(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        plan = " ".join(
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN SELECT d.event_id, e.size FROM deliveries AS d"
                " INDEXED BY deliveries_by_state"
                " JOIN events AS e ON e.id = d.event_id WHERE d.destination = ?"
                " AND d.state = 'pending' AND d.next_attempt_at <= ?"
                " AND (d.claimed_until IS NULL OR d.claimed_until <= ?)"
                " ORDER BY d.event_id LIMIT ?",
                ("a", 0, 0, 10),
            )
        )
    finally:
        conn.close()
    # The worker's query walks the index in order: no scan of the table, no sort.
    # (INDEXED BY also makes SQLite fail loudly if the index were ever missing.)
    assert "deliveries_by_state" in plan
    assert "TEMP B-TREE" not in plan


def test_sqlite_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    SQLiteOutbox(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(Exception, match="schema version"):
        SQLiteOutbox(path)


def test_two_connections_never_claim_the_same_rows(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    one, two = SQLiteOutbox(path), SQLiteOutbox(path)
    try:
        put(one, 6)
        first = claim(one, "a", "p1", batch_size=4)
        second = claim(two, "a", "p2", batch_size=4)
        assert first == ["m0", "m1", "m2", "m3"]
        assert second == ["m4", "m5"]
        assert claim(one, "a", "p1b") == []
    finally:
        one.close()
        two.close()


def test_sqlite_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    first = SQLiteOutbox(path, synchronous="full")
    put(first, 3)
    claim(first, "a", "dead-process")
    first.close()
    again = SQLiteOutbox(path)
    try:
        assert again.pending(["a", "b"]) == {"a": 3, "b": 3}
        assert claim(again, "a", "t", now=NOW + 31) == ["m0", "m1", "m2"]
    finally:
        again.close()
