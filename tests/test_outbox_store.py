"""The contract suite (``router_core.testing.outbox_contract``) on our three engines, batch
planning, and SQLite's own guarantees."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from router_core.limits import BatchLimits
from router_core.outbox import MemoryOutbox, Outbox, SQLiteOutbox
from router_core.outbox.sqlite import SCHEMA_VERSION
from router_core.outbox.store import ENVELOPE_BYTES, estimate_bytes, plan_batch
from router_core.testing.outbox_contract import NOW, OutboxContract

put = OutboxContract.put
claim = OutboxContract.claim


class TestSQLiteOutbox(OutboxContract):
    def make_outbox(self) -> Outbox:
        return SQLiteOutbox(self.tmp_path / "outbox.db")


class TestMemoryOutbox(OutboxContract):
    def make_outbox(self) -> Outbox:
        return MemoryOutbox()


class TestPostgresOutbox(OutboxContract):
    def make_outbox(self) -> Outbox:
        # A real server (tests/postgres.py), or a skip saying how; its clock moved by the suite.
        outbox: Outbox = self.request.getfixturevalue("clocked_postgres_outbox")
        return outbox


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
