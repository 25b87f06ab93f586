"""The SQLite outbox's per-destination cursors (schema version 2): what is written for the
happy path and what only when an event needs a row, counts over fresh, batched and row
events, deletion by range, enqueue_many, and the migration of a version-1 file."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from router_core.limits import BatchLimits
from router_core.outbox import SQLiteOutbox
from router_core.outbox.sqlite import _IDLE_S, APPLICATION_ID, SCHEMA_VERSION
from router_core.outbox.store import AcceptedEvent
from router_core.testing.outbox_contract import LIMITS, NOW, OutboxContract

put = OutboxContract.put
claim = OutboxContract.claim


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def outbox(path: Path) -> Iterator[SQLiteOutbox]:
    store = SQLiteOutbox(path)
    yield store
    store.close()


def rows_in(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def ids(
    outbox: SQLiteOutbox, destination: str, token: str, now: float = NOW, **kw: int
) -> list[int]:
    rows = outbox.claim(
        destination, limits=LIMITS, batch_size=kw.get("batch_size", 100), token=token, now=now,
        lease_until=now + 30, max_in_flight=kw.get("max_in_flight"),
    )  # fmt: skip
    return [r.event_id for r in rows]


def test_the_happy_path_writes_no_row_per_event_and_deletes_the_events(
    outbox: SQLiteOutbox, path: Path
) -> None:
    put(outbox, 250)
    for destination in ("a", "b"):
        for n in range(3):
            taken = ids(outbox, destination, f"{destination}{n}")
            assert rows_in(path, "deliveries") == 0
            assert rows_in(path, "batches") == 1
            outbox.ack(destination, f"{destination}{n}", taken)
            outbox.release(destination, f"{destination}{n}")
        assert rows_in(path, "batches") == 0
        assert outbox.pending(["a", "b"])[destination] == 0
    assert rows_in(path, "events") == 0
    stats = outbox.stats(NOW)
    assert (stats.events, stats.bytes, stats.counts) == (0, 0, {})
    assert outbox.stored_totals() == (0, 0)
    assert outbox.high_water() == 0  # none stored; and ids are never reused:
    put(outbox, 1)
    assert outbox.high_water() == 251


def test_events_go_only_once_every_destination_is_done(outbox: SQLiteOutbox, path: Path) -> None:
    put(outbox, 4)
    outbox.ack("a", "t", ids(outbox, "a", "t"))
    assert rows_in(path, "events") == 4  # b has not taken them yet
    taken = ids(outbox, "b", "u")
    outbox.ack("b", "u", taken[:2])  # a part: the rest of the batch becomes rows
    assert rows_in(path, "events") == 2
    assert outbox.pending(["b"]) == {"b": 2}
    outbox.ack("b", "u", taken[2:])
    assert rows_in(path, "events") == 0
    assert outbox.stats(NOW).events == 0


def test_a_split_batch_settles_part_by_part(outbox: SQLiteOutbox, path: Path) -> None:
    put(outbox, 8, destinations=("a",))
    taken = ids(outbox, "a", "t")
    assert taken == [1, 2, 3, 4, 5, 6, 7, 8]
    # As the worker does after a permanent refusal: halves, then halves of halves.
    outbox.ack("a", "t", [1, 2, 3, 4])
    outbox.dead("a", "t", [5, 6], error="HTTP 400", status_code=400, now=NOW)
    outbox.ack("a", "t", [7])
    outbox.retry(
        "a", "t", [8], next_attempt_at=NOW + 10, error="HTTP 503", status_code=503, now=NOW
    )
    outbox.release("a", "t")
    assert outbox.dead_counts(["a"]) == {"a": 2}
    assert outbox.pending(["a"]) == {"a": 1}
    assert outbox.stats(NOW).counts == {"a": {"dead": 2, "retrying": 1}}
    assert rows_in(path, "events") == 3  # two dead letters and the retry
    assert ids(outbox, "a", "u", now=NOW + 9) == []
    rows = outbox.claim(
        "a", limits=LIMITS, batch_size=10, token="v", now=NOW + 10, lease_until=NOW + 40
    )
    assert [(r.event_id, r.attempts) for r in rows] == [(8, 1)]
    outbox.ack("a", "v", [8])
    assert outbox.purge(dead_only=True, destination=None) == 2
    assert rows_in(path, "events") == 0


def test_due_rows_and_fresh_events_fill_one_claim(outbox: SQLiteOutbox) -> None:
    put(outbox, 3, destinations=("a",))
    assert ids(outbox, "a", "t", batch_size=2) == [1, 2]
    outbox.retry("a", "t", [2], next_attempt_at=NOW + 5, error="HTTP 503", status_code=503, now=NOW)
    outbox.ack("a", "t", [1])
    put(outbox, 2, destinations=("a",))
    # The retried row first (it is older), then fresh events from the cursor.
    rows = outbox.claim(
        "a", limits=LIMITS, batch_size=3, token="u", now=NOW + 5, lease_until=NOW + 35
    )
    assert [(r.event_id, r.attempts) for r in rows] == [(2, 1), (3, 0), (4, 0)]
    outbox.ack("a", "u", [2, 3, 4])
    assert outbox.pending(["a"]) == {"a": 1}
    assert ids(outbox, "a", "v") == [5]


def test_release_hands_a_batch_back_whole(outbox: SQLiteOutbox) -> None:
    put(outbox, 3)
    assert ids(outbox, "a", "t") == [1, 2, 3]
    outbox.release("a", "t")
    assert outbox.stats(NOW).counts["a"] == {"pending": 3}
    rows = outbox.claim("a", limits=LIMITS, batch_size=10, token="u", now=NOW, lease_until=NOW + 1)
    assert [(r.event_id, r.attempts) for r in rows] == [(1, 0), (2, 0), (3, 0)]
    outbox.ack("a", "t", [1, 2, 3])  # the old token: nothing
    assert outbox.pending(["a"]) == {"a": 3}
    outbox.ack("a", "u", [1, 2, 3])
    assert outbox.pending(["a", "b"]) == {"a": 0, "b": 3}


def test_a_batch_whose_lease_ran_out_goes_to_another_token(outbox: SQLiteOutbox) -> None:
    put(outbox, 3, destinations=("a",))
    assert ids(outbox, "a", "dead-worker") == [1, 2, 3]
    assert ids(outbox, "a", "early", now=NOW + 29) == []
    outbox.extend("a", "dead-worker", NOW + 40)
    assert ids(outbox, "a", "early", now=NOW + 39) == []
    assert ids(outbox, "a", "late", now=NOW + 40) == [1, 2, 3]
    # The first holder's late answers change nothing.
    outbox.ack("a", "dead-worker", [1, 2, 3])
    outbox.dead("a", "dead-worker", [1], error="x", status_code=None, now=NOW + 41)
    outbox.release("a", "dead-worker")
    assert outbox.stats(NOW + 41).counts == {"a": {"in_flight": 3}}
    outbox.ack("a", "late", [1, 2, 3])
    assert outbox.stats(NOW + 41).events == 0


def test_another_process_acknowledges_a_batch_it_did_not_claim(path: Path) -> None:
    one, two = SQLiteOutbox(path), SQLiteOutbox(path)
    try:
        put(one, 6)
        taken = ids(one, "a", "t")
        # Two does not know the batch: it checks the events, and takes the same path.
        two.ack("a", "t", [*taken[:-1], 99])
        assert two.pending(["a"]) == {"a": 1}
        two.ack("a", "t", taken[-1:])
        assert one.pending(["a"]) == {"a": 0}
        assert rows_in(path, "batches") == 0
        # All of a batch, acknowledged by the other process: no row is ever written.
        whole = ids(one, "b", "u")
        assert rows_in(path, "deliveries") == 0
        two.ack("b", "u", whole)
        assert rows_in(path, "batches") == 0
        assert rows_in(path, "deliveries") == 0
        assert rows_in(path, "events") == 0
    finally:
        one.close()
        two.close()


def test_max_in_flight_counts_batches_and_rows(outbox: SQLiteOutbox) -> None:
    put(outbox, 6, destinations=("a",))
    assert ids(outbox, "a", "t1", batch_size=2, max_in_flight=2) == [1, 2]
    assert ids(outbox, "a", "t2", batch_size=2, max_in_flight=2) == [3, 4]
    assert ids(outbox, "a", "t3", batch_size=2, max_in_flight=2) == []
    outbox.ack("a", "t1", [1])  # a part: t1's batch is rows now, still in flight
    assert ids(outbox, "a", "t3", batch_size=2, max_in_flight=2) == []
    outbox.release("a", "t1")
    assert ids(outbox, "a", "t3", batch_size=2, max_in_flight=2) == [2, 5]
    assert ids(outbox, "a", "t4", batch_size=2, max_in_flight=3) == [6]


def test_counts_see_fresh_batched_and_row_events(outbox: SQLiteOutbox) -> None:
    put(outbox, 10)
    assert ids(outbox, "a", "t", batch_size=2) == [1, 2]
    outbox.retry(
        "a", "t", [1, 2], next_attempt_at=NOW + 60, error="HTTP 503", status_code=503, now=NOW
    )
    assert ids(outbox, "a", "u", batch_size=3) == [3, 4, 5]
    stats = outbox.stats(NOW)
    assert stats.counts == {
        "a": {"retrying": 2, "in_flight": 3, "pending": 5},
        "b": {"pending": 10},
    }
    assert stats.oldest_pending == NOW
    assert (stats.events, stats.bytes) == (10, outbox.stored_totals()[1])
    assert outbox.pending(["a", "b"]) == {"a": 10, "b": 10}
    assert outbox.pending(["a"], up_to=4) == {"a": 4}
    assert outbox.pending(["a"], up_to=0) == {"a": 0}
    assert outbox.any_pending(["a"], up_to=1)
    assert outbox.stats(NOW + 31).counts["a"] == {"retrying": 2, "pending": 8}
    outbox.ack("a", "u", [3, 4, 5])
    taken = ids(outbox, "a", "v")
    assert taken == [6, 7, 8, 9, 10]
    outbox.ack("a", "v", taken)
    assert outbox.pending(["a"]) == {"a": 2}
    assert not outbox.any_pending(["a"], up_to=0)
    assert outbox.any_pending(["a"], up_to=2)
    exported = outbox.export(0, 100)
    assert [e.id for e in exported] == list(range(1, 11))
    assert exported[0].rows == (
        ("a", "pending", 1, "HTTP 503", 503),
        ("b", "pending", 0, None, None),
    )
    assert exported[5].rows == (("b", "pending", 0, None, None),)


def test_purge_and_replay(outbox: SQLiteOutbox, path: Path) -> None:
    put(outbox, 6)
    assert ids(outbox, "a", "t", batch_size=2) == [1, 2]
    outbox.dead("a", "t", [1, 2], error="HTTP 400", status_code=400, now=NOW)
    assert ids(outbox, "a", "u", batch_size=2) == [3, 4]  # in flight
    assert outbox.replay("a", NOW) == 2
    assert outbox.pending(["a"]) == {"a": 6}
    # Every row of a: two replayed, a batch, two fresh.
    assert outbox.purge(dead_only=False, destination="a") == 6
    assert outbox.pending(["a", "b"]) == {"a": 0, "b": 6}
    assert ids(outbox, "a", "v") == []
    outbox.ack("a", "u", [3, 4])  # purged under its holder: nothing happens
    assert rows_in(path, "events") == 6
    put(outbox, 1, destinations=("a",))  # a still has a cursor: later events go to it
    assert outbox.pending(["a"]) == {"a": 1}
    assert outbox.purge(dead_only=False, destination=None) == 7
    assert rows_in(path, "events") == 0
    assert outbox.stats(NOW).events == 0


def test_a_destination_nobody_delivers_holds_back_only_its_own_events(
    outbox: SQLiteOutbox, path: Path
) -> None:
    put(outbox, 3, destinations=("a", "gone"))
    put(outbox, 3, destinations=("a",))
    outbox.ack("a", "t", ids(outbox, "a", "t"))
    assert rows_in(path, "events") == 6  # gone's cursor holds them all
    later = NOW + _IDLE_S + 1
    for n in range(2):
        outbox.enqueue(f"n{n}", "{}", ["a"], now=later, max_events=None, max_bytes=None)
    # a's next claim finds gone idle: its events become rows, its cursor moves on.
    outbox.ack("a", "u", ids(outbox, "a", "u", now=later))
    assert ids(outbox, "a", "v", now=later) == []
    assert rows_in(path, "deliveries") == 3
    assert rows_in(path, "events") == 3
    assert outbox.pending(["gone"]) == {"gone": 3}
    assert outbox.purge(dead_only=False, destination="gone") == 3
    assert rows_in(path, "events") == 0


def test_enqueue_many_stores_past_the_limits(outbox: SQLiteOutbox) -> None:
    put(outbox, 2, destinations=("a",))
    accepted = [
        AcceptedEvent(f"j{i}", json.dumps({"n": i, "é": "ü"}), ("a", "c"), NOW - 5)
        for i in range(3000)
    ]
    outbox.enqueue_many(accepted)
    outbox.enqueue_many([])
    assert outbox.high_water() == 3002
    events, stored = outbox.stored_totals()
    assert events == 3002
    assert stored == outbox.stats(NOW).bytes
    assert stored == 2 * len(put_payload(0)) + sum(len(e.payload.encode()) for e in accepted)
    assert outbox.pending(["a", "c"]) == {"a": 3002, "c": 3000}
    assert outbox.stats(NOW).oldest_pending == NOW - 5
    # The limits count them: the next send() is refused.
    assert outbox.enqueue("x", "{}", ["a"], now=NOW, max_events=3002, max_bytes=None) == (
        "max_events",
        3002,
        3002,
    )
    rows = outbox.claim("c", limits=LIMITS, batch_size=500, token="t", now=NOW, lease_until=NOW + 1)
    assert [r.message_id for r in rows[:2]] == ["j0", "j1"]
    assert (rows[0].attempts, rows[0].since) == (0, NOW - 5)


def put_payload(i: int) -> str:
    return f'{{"type":"track","event":"E","user_id":"u","message_id":"m{i}"}}'


def test_destination_names_match_only_whole_routes(outbox: SQLiteOutbox) -> None:
    names = ['a"b', "a", "x, a", "ä", ", ", "]"]
    for name in names:
        put(outbox, 1, destinations=(name, "z"))
    for n, name in enumerate(names, start=1):
        assert outbox.pending([name]) == {name: 1}
        assert ids(outbox, name, f"t{n}") == [n]


# -- migration from schema version 1 ----------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY, message_id TEXT NOT NULL, payload TEXT NOT NULL,
    size INTEGER NOT NULL, created_at REAL NOT NULL, routes TEXT, total INTEGER
);
CREATE TABLE deliveries (
    destination TEXT NOT NULL, event_id INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at REAL NOT NULL, since REAL NOT NULL,
    claim_token TEXT, claimed_until REAL, last_error TEXT, last_status INTEGER,
    updated_at REAL NOT NULL, PRIMARY KEY (destination, event_id)
) WITHOUT ROWID;
CREATE INDEX deliveries_by_state ON deliveries (destination, state, event_id);
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_claim ON deliveries (claim_token) WHERE claim_token IS NOT NULL;
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1), events INTEGER NOT NULL, bytes INTEGER NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0, routed_total INTEGER NOT NULL DEFAULT 0
);
INSERT INTO totals (id, events, bytes) VALUES (1, 0, 0);
CREATE TRIGGER events_removed AFTER DELETE ON events BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
"""


def make_v1(path: Path) -> None:
    """A version-1 outbox as that engine left it: events 1-4 routed (a: 1 retrying, 2 dead,
    3 held by a worker that died, 4 delivered; b: all four pending), 5-6 not routed yet."""
    conn = sqlite3.connect(path)
    conn.executescript(_V1_SCHEMA)
    total = 0
    for i in range(1, 7):
        payload = put_payload(i - 1)
        total += len(payload)
        conn.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)",
            (i, f"m{i - 1}", payload, len(payload), NOW, '["a", "b"]', total),
        )
    rows = [
        ("a", 1, "pending", 2, NOW, None, None),
        ("a", 2, "dead", 1, NOW, None, None),
        ("a", 3, "pending", 0, NOW, "old-worker", NOW + 30),
        *[("b", i, "pending", 0, NOW, None, None) for i in range(1, 5)],
    ]
    for destination, event_id, state, attempts, at, token, until in rows:
        conn.execute(
            "INSERT INTO deliveries (destination, event_id, state, attempts, next_attempt_at,"
            " since, claim_token, claimed_until, last_error, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'HTTP 503', ?)",
            (destination, event_id, state, attempts, at, at, token, until, at),
        )
    routed_total = conn.execute("SELECT total FROM events WHERE id = 4").fetchone()[0]
    conn.execute(
        "UPDATE totals SET events = 4, bytes = ?, routed = 4, routed_total = ?",
        (routed_total, routed_total),
    )
    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


@pytest.mark.parametrize("marked", [True, False])
def test_a_version_1_outbox_is_migrated_and_delivered(path: Path, marked: bool) -> None:
    make_v1(path)
    if not marked:  # as written before application_id
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA application_id = 0")
    total = sum(len(put_payload(i)) for i in range(6))
    outbox = SQLiteOutbox(path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
            assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert outbox.pending(["a", "b"]) == {"a": 4, "b": 6}
        assert outbox.dead_counts(["a", "b"]) == {"a": 1, "b": 0}
        stats = outbox.stats(NOW)
        assert (stats.events, stats.bytes) == (6, total)
        assert stats.counts == {
            "a": {"retrying": 1, "dead": 1, "in_flight": 1, "pending": 2},
            "b": {"pending": 6},
        }
        # New events carry on after the old ones.
        put(outbox, 1, destinations=("a",))
        assert outbox.high_water() == 7
        later = NOW + 31  # the dead worker's lease is over
        rows = outbox.claim(
            "a", limits=LIMITS, batch_size=100, token="t", now=later, lease_until=later + 30
        )
        assert [(r.event_id, r.attempts) for r in rows] == [(1, 2), (3, 0), (5, 0), (6, 0), (7, 0)]
        outbox.ack("a", "t", [r.event_id for r in rows])
        assert ids(outbox, "b", "u", now=later) == [1, 2, 3, 4, 5, 6]
        outbox.ack("b", "u", [1, 2, 3, 4, 5, 6])
        assert outbox.replay("a", later) == 1
        assert ids(outbox, "a", "v", now=later) == [2]
        outbox.ack("a", "v", [2])
        assert outbox.stats(later).counts == {}
        assert outbox.stored_totals() == (0, 0)
        assert rows_in(path, "events") == 0
    finally:
        outbox.close()
    SQLiteOutbox(path).close()  # opens again as it is


def test_small_limits_still_fit_requests(outbox: SQLiteOutbox) -> None:
    put(outbox, 10, destinations=("a",))
    small = BatchLimits(max_events=3, max_request_bytes=500_000, max_event_bytes=32_000)
    first = outbox.claim("a", limits=small, batch_size=100, token="t", now=NOW, lease_until=NOW + 5)
    second = outbox.claim("a", limits=small, batch_size=2, token="u", now=NOW, lease_until=NOW + 5)
    assert [r.event_id for r in first + second] == [1, 2, 3, 4, 5]


def test_a_token_claimed_with_twice_holds_both_claims(outbox: SQLiteOutbox) -> None:
    put(outbox, 4, destinations=("a",))
    assert ids(outbox, "a", "t", batch_size=2) == [1, 2]
    assert ids(outbox, "a", "t", batch_size=2) == [3, 4]
    assert outbox.stats(NOW).counts == {"a": {"in_flight": 4}}
    outbox.ack("a", "t", [1, 2, 3, 4])
    assert outbox.stats(NOW).events == 0
