"""The durable outbox: one SQLite file in WAL mode (stdlib ``sqlite3``).

Each event's JSON is stored once in ``events``; ``deliveries`` holds one row per destination
(primary key ``(destination, event_id)``), so each destination's acknowledgment is recorded on
its own. Delivered rows are deleted, and an event goes when no row needs it any more.

``send()`` writes one row and nothing else: the event, the destinations it goes to
(``routes``, a JSON array) and ``total``, the running sum of the sizes of every event stored so
far. The per-destination rows are made from ``routes`` later, many events in one statement, by
whoever next claims rows (*routing*; ``totals.routed`` is the last event id routed). One row,
no index and no trigger is what keeps the caller's commit short: each of those costs the
commit another b-tree page.

The size limits are still checked exactly on every ``send()`` without counting rows:
``totals`` holds the events and bytes stored up to ``routed`` (kept by the routing and by a
trigger on delete), and the events above ``routed`` are counted from their ids (they are
consecutive and never deleted before they are routed) and ``total``.

Claims use ``BEGIN IMMEDIATE`` (SQLite's write lock), so two processes can never claim the
same rows; a claim is a token plus a lease deadline, so rows held by a process that died are
claimable again once the deadline passes.

The file in trouble (docs/delivery.md): a file that is not an outbox (garbage, or another
program's database: ``application_id`` tells) is refused before anything is written to it; a
read-only file or directory is found when the outbox opens; every SQLite or OS error comes out
as an ``OutboxUnavailableError`` naming the path (``filecheck.explain``). Every few
milliseconds, and before any use after that, the outbox looks at the path and the disk: a file
deleted or renamed over stops all use (SQLite itself would go on writing to the unlinked
file), and ``send()`` refuses events while the disk has less room than delivery needs (the
write-ahead log's size plus a reserve), so that new events never take the space the workers
need to acknowledge and checkpoint. The write-ahead log is kept near ``journal_size_limit``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from router_core.errors import OutboxDiskFullError, OutboxUnavailableError
from router_core.limits import BatchLimits
from router_core.logs import get_logger
from router_core.outbox.filecheck import check_location, explain, identity, room
from router_core.outbox.store import (
    AcceptedEvent,
    ClaimedRow,
    ForkLocks,
    OutboxStats,
    StoredEvent,
    WorkerInfo,
    plan_batch,
)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteOutbox"]

log = get_logger("event_router.outbox")

SCHEMA_VERSION = 1
APPLICATION_ID = 0x45565254  # "EVRT" in the file header: this file is an event-router outbox
_TABLES = frozenset({"events", "deliveries", "totals"})  # outboxes made before APPLICATION_ID

_SCHEMA = """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    routes TEXT,
    total INTEGER
);
CREATE TABLE deliveries (
    destination TEXT NOT NULL,
    event_id INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    since REAL NOT NULL,
    claim_token TEXT,
    claimed_until REAL,
    last_error TEXT,
    last_status INTEGER,
    updated_at REAL NOT NULL,
    PRIMARY KEY (destination, event_id)
) WITHOUT ROWID;
-- The worker pages through one destination's rows in event order.
CREATE INDEX deliveries_by_state ON deliveries (destination, state, event_id);
-- Deleting an event once no destination needs it.
CREATE INDEX deliveries_by_event ON deliveries (event_id);
CREATE INDEX deliveries_by_claim ON deliveries (claim_token) WHERE claim_token IS NOT NULL;
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    routed INTEGER NOT NULL DEFAULT 0,
    routed_total INTEGER NOT NULL DEFAULT 0
);
INSERT INTO totals (id, events, bytes) VALUES (1, 0, 0);
CREATE TRIGGER events_removed AFTER DELETE ON events BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
"""

# The newest event, and what is stored: t.events/t.bytes up to t.routed, plus the events
# above it (ids consecutive from t.routed + 1; ``total`` is the running sum of sizes).
_NEWEST = "(SELECT id, total FROM events ORDER BY id DESC LIMIT 1)"
_STORED_EVENTS = "t.events + max(coalesce(e.id, 0) - t.routed, 0)"
_STORED_BYTES = "t.bytes + CASE WHEN e.id > t.routed THEN e.total - t.routed_total ELSE 0 END"

# One statement: the size check and the insert are atomic without BEGIN ... COMMIT.
# Parameters: message_id, payload, size, created_at, routes, max_events, max_bytes.
_INSERT = (
    "INSERT INTO events (id, message_id, payload, size, created_at, routes, total)"
    " SELECT max(t.routed, coalesce(e.id, 0)) + 1, ?1, ?2, ?3, ?4, ?5,"
    " CASE WHEN e.id > t.routed THEN e.total ELSE t.routed_total END + ?3"
    f" FROM totals AS t LEFT JOIN {_NEWEST} AS e"
    f" WHERE (?6 IS NULL OR {_STORED_EVENTS} < ?6)"
    f" AND (?7 IS NULL OR {_STORED_BYTES} + ?3 <= ?7)"
)
_STORED = (
    f"SELECT {_STORED_EVENTS}, {_STORED_BYTES}, t.routed FROM totals AS t LEFT JOIN {_NEWEST} AS e"
)

_ROUTE_CHUNK = 2000  # events routed per transaction: short enough not to hold up send()
_MAX_CACHED_ROUTES = 256

_BUSY_TIMEOUT_S = 15.0
# The router copies the write-ahead log into the database from a background thread
# (``checkpoint()``), so that no send() pays for it. SQLite's own checkpoint on commit, which
# runs in whichever thread commits, is kept only as a backstop at this many pages (64 MB).
_AUTOCHECKPOINT_PAGES = 16384
# Once copied into the database the log is reused from its start; SQLite truncates it to this
# size then, and checkpoint() truncates it to nothing when it is fully copied and larger.
WAL_LIMIT_BYTES = 4 * 1024**2
_CHECK_S = 0.01  # how often the path and the disk are looked at (a stat and a statvfs, ~5 µs)
_CHUNK = 500  # ids per IN (...) list, well under SQLite's variable limit
_CHECKPOINT_S = 0.25  # how often the queue has the write-ahead log copied into the database

# Connections inherited across fork() are never used or closed in the child (SQLite forbids
# it); keeping a reference stops the garbage collector from closing them.
_abandoned: list[sqlite3.Connection] = []


class SQLiteOutbox:
    """The outbox in a SQLite file. ``synchronous="full"`` also survives power loss."""

    def __init__(
        self, path: str | os.PathLike[str], synchronous: Literal["normal", "full"] = "normal"
    ) -> None:
        self._path = Path(path).expanduser().absolute()
        self._synchronous = synchronous
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        # A connection of its own: a checkpoint runs beside writes, not under self._lock.
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._routes: dict[tuple[str, ...], str] = {}
        # What the periodic look at the path and the disk found (``_look()``).
        self._identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the open file
        self._next_look = 0.0  # time.monotonic() of the next look
        self._lost: str | None = None  # why the path no longer names the open file
        self._low_space: str | None = None  # why send() refuses events without trying
        self._disk_full = False  # SQLite said so, and no write went through since
        self._tight = False  # the disk is nearly full: healthy() says no, send() writes itself
        self._unreleased: set[tuple[str, str]] = set()  # claims release() could not hand back
        self._fork_locks = ForkLocks()
        with self._lock:
            self._connection()  # fail now, in the constructor, when the file is unusable

    @property
    def location(self) -> str:
        return str(self._path)

    @property
    def path(self) -> Path:
        """The database file (absolute)."""
        return self._path

    @property
    def durable(self) -> bool:
        return True

    @property
    def housekeeping_interval(self) -> float:
        """The write-ahead log would only grow without a checkpoint now and then."""
        return _CHECKPOINT_S

    @property
    def lock(self) -> threading.Lock:
        """Held around every use of the connection."""
        return self._lock

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        if self._closed:
            raise RuntimeError(f"the outbox {self.location} is closed")
        check_location(self._path)
        try:
            if not self._path.parent.exists():
                self._path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self._path,
                timeout=_BUSY_TIMEOUT_S,
                isolation_level=None,  # transactions are explicit: BEGIN IMMEDIATE ... COMMIT
                check_same_thread=False,  # every use is under self._lock
            )
        except (sqlite3.Error, OSError) as exc:
            raise explain(self._path, exc) from exc
        try:
            # Reads only, so that nothing is ever written into a file that is not an outbox.
            fresh = self._schema_state(conn) == "empty"
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":  # SQLite keeps the old mode when it cannot write
                conn.execute("BEGIN IMMEDIATE")  # says why: read-only, most likely
                conn.execute("ROLLBACK")
            conn.execute(f"PRAGMA synchronous={self._synchronous.upper()}")
            conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
            self._migrate(conn)
            if not fresh:
                # A read-only file shows on the first change to a page, not on opening nor on
                # BEGIN: change one (to its own value) and roll back, to know now.
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                finally:
                    _rollback(conn)
            self._identity = identity(self._path)
        except (sqlite3.Error, OSError) as exc:
            conn.close()
            raise explain(self._path, exc) from exc
        except BaseException:
            conn.close()
            raise
        self._next_look = time.monotonic() + _CHECK_S
        self._conn = conn
        return conn

    def _schema_state(self, conn: sqlite3.Connection) -> Literal["current", "empty", "unmarked"]:
        """What the file holds: our current schema, nothing yet, or our schema from before
        ``application_id`` was set. Refuses anything else without writing to it."""
        application_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        objects = conn.execute("SELECT type, name FROM sqlite_master").fetchall()
        tables = {name for kind, name in objects if kind == "table"}
        if application_id == APPLICATION_ID or (
            application_id == 0 and version >= 1 and tables >= _TABLES
        ):
            if version > SCHEMA_VERSION:
                raise OutboxUnavailableError(
                    f"the outbox {self.location} has schema version {version}; this "
                    f"event-router understands up to {SCHEMA_VERSION}. Upgrade event-router, "
                    "or point [queue] path at another file.",
                    path=self.location,
                )
            if application_id == 0:
                return "unmarked"
            return "current" if version == SCHEMA_VERSION else "empty"
        if application_id == 0 and version == 0 and not objects:
            return "empty"
        listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise OutboxUnavailableError(
            f"the file {self.location} is another program's SQLite database, not an "
            f"event-router outbox (application_id {application_id:#x}, user_version {version}"
            f"{', tables: ' + listed if tables else ''}); nothing was written to it. Point "
            "[queue] path at another file: an outbox is created where none exists.",
            path=self.location,
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if self._schema_state(conn) == "current":
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created it while we waited for the lock.
            state = self._schema_state(conn)
            if state == "empty":
                for statement in _split(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if state != "current":
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise

    # -- the file's health --------------------------------------------------------------------

    def _use(self, *, accepting: bool = False) -> sqlite3.Connection:
        """The connection, once the file is known to be usable (under ``self._lock``).

        ``accepting``: for storing a new event, which the disk being full refuses too.
        """
        if time.monotonic() >= self._next_look:
            self._look()
        if self._lost is not None:
            raise OutboxUnavailableError(self._lost, path=self.location)
        if accepting and self._low_space is not None:
            raise OutboxDiskFullError(self._low_space, path=self.location)
        return self._conn if self._conn is not None else self._connection()

    def _look(self) -> None:
        """Look at the path and the disk (under ``self._lock``); ``_use()`` acts on it."""
        now = time.monotonic()
        self._next_look = now + _CHECK_S
        if self._identity is not None:
            self._look_at_path()
        free = room(self._path)
        if free is not None and free[0] < free[1]:
            available, needed = free
            reason = (
                f"the disk holding the outbox {self.location} has {available:,} bytes free, "
                f"less than the {needed:,} bytes kept free so that delivery can go on"
            )
            if self._low_space is None:
                log.error("outbox_disk_full", outbox=self.location, reason=reason)
            self._low_space = (
                f"{reason}. The event was not accepted; events accepted earlier are kept and "
                "still delivered. Free space on that disk: send() accepts events again by "
                "itself once there is room."
            )
        elif self._low_space is not None:
            self._low_space = None
            log.info("outbox_disk_space_back", outbox=self.location)
        self._tight = free is not None and free[0] < 4 * free[1]
        if self._tight:
            self._next_look = now  # nearly full: look before every use

    def _look_at_path(self) -> None:
        try:
            now = identity(self._path)
        except OSError:
            return  # the path cannot be looked at just now: SQLite's own errors will tell
        if now == self._identity:
            if self._lost is not None:
                self._lost = None
                log.info("outbox_file_back", outbox=self.location)
            return
        if self._lost is not None:
            return
        old = "deleted" if now is None else "replaced"
        what = "deleted or moved away" if now is None else "replaced by another file"
        stranded = 0
        if self._conn is not None:
            with contextlib.suppress(sqlite3.Error):
                stranded = self._conn.execute(_STORED).fetchone()[0]
                # Empty our write-ahead log into the old file: left at the path, its frames
                # would be read as part of whatever database is put there next.
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._lost = (
            f"the outbox {self.location} was {what} while the router was running: new events "
            "are refused, as the open file is no longer at that path. Move the file back, or "
            "restart the process (it opens the file now at that path, or creates a new one)"
        )
        log.error(
            "outbox_file_lost",
            outbox=self.location,
            what=what,
            stranded_events=stranded,
            note=(
                f"{stranded:,} event(s) accepted before are only in the {old} file: "
                "they cannot be delivered unless the file is moved back to its path"
            ),
        )

    def _failed(
        self, exc: sqlite3.Error | OSError, consequence: str = ""
    ) -> OutboxUnavailableError:
        """``exc`` explained (and a full disk logged, once until a write goes through)."""
        error = explain(self._path, exc, consequence)
        if isinstance(error, OutboxDiskFullError):
            if not self._disk_full:
                log.error("outbox_disk_full", outbox=self.location, reason=str(exc))
            self._disk_full = True
            self._next_look = 0.0  # how much room is left decides what send() does next
        return error

    def _wrote(self) -> None:
        """A write went through after SQLite said the disk was full (under ``self._lock``)."""
        self._disk_full = False
        log.info("outbox_disk_space_back", outbox=self.location)

    # -- transactions -------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the lock."""
        with self._lock:
            conn = self._use()
            unreleased = tuple(self._unreleased)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for destination, token in unreleased:
                        conn.execute(_RELEASE, (token, destination))
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from exc
            self._unreleased.difference_update(unreleased)
            if self._disk_full:
                self._wrote()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction, under the lock: several queries see the same state."""
        with self._lock:
            conn = self._use()
            try:
                conn.execute("BEGIN")
                try:
                    yield conn
                finally:
                    _rollback(conn)  # nothing was written: ending it either way is the same
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from exc

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._snapshot() as conn:
            return conn.execute(sql, params).fetchall()

    def _route(self, conn: sqlite3.Connection) -> bool:
        """Make the per-destination rows of the next events not routed yet (in a write
        transaction). Returns True when events are still left to route."""
        routed, routed_total = conn.execute("SELECT routed, routed_total FROM totals").fetchone()
        newest = conn.execute("SELECT max(id) FROM events").fetchone()[0]
        if newest is None or newest <= routed:
            return False
        upto = min(newest, routed + _ROUTE_CHUNK)
        count, upto_total = conn.execute(
            "SELECT COUNT(*), max(total) FROM events WHERE id > ? AND id <= ?", (routed, upto)
        ).fetchone()
        conn.execute(
            "INSERT INTO deliveries (destination, event_id, next_attempt_at, since, updated_at)"
            " SELECT r.value, e.id, e.created_at, e.created_at, e.created_at"
            " FROM events AS e, json_each(e.routes) AS r WHERE e.id > ? AND e.id <= ?",
            (routed, upto),
        )
        conn.execute(
            "UPDATE totals SET events = events + ?, bytes = bytes + ?, routed = ?,"
            " routed_total = ? WHERE id = 1",
            (count, upto_total - routed_total, upto, upto_total),
        )
        return bool(upto < newest)

    def _routes_of(self, destinations: Sequence[str]) -> str:
        key = tuple(destinations)
        routes = self._routes.get(key)
        if routes is None:
            routes = json.dumps(list(dict.fromkeys(key)))  # each destination once
            if len(self._routes) < _MAX_CACHED_ROUTES:
                self._routes[key] = routes
        return routes

    # -- writing ------------------------------------------------------------------------------

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
        size = len(payload) if payload.isascii() else len(payload.encode())  # UTF-8 bytes
        params = (
            message_id,
            payload,
            size,
            now,
            self._routes_of(destinations),
            max_events,
            max_bytes,
        )
        with self._lock:
            conn = self._use(accepting=True)
            try:
                if conn.execute(_INSERT, params).rowcount == 1:
                    if self._disk_full:
                        self._wrote()
                    return None
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc, _NOT_ACCEPTED) from exc
        # Full (or it looked so): decide which limit in a transaction, and store the event
        # after all if another process made room in between.
        with self._write() as conn:
            events, stored, _ = conn.execute(_STORED).fetchone()
            if max_events is not None and events + 1 > max_events:
                return ("max_events", max_events, events)
            if max_bytes is not None and stored + size > max_bytes:
                return ("max_bytes", max_bytes, stored)
            conn.execute(_INSERT, params)
        return None

    def enqueue_many(self, events: Sequence[AcceptedEvent]) -> None:
        """Store events a spool accepted, in one transaction, without the size limits."""
        if not events:
            return
        with self._write() as conn:
            # Each INSERT continues the running total from the newest event (see _INSERT).
            conn.executemany(
                _INSERT,
                [
                    (
                        e.message_id,
                        e.payload,
                        len(e.payload) if e.payload.isascii() else len(e.payload.encode()),
                        e.accepted_at,
                        self._routes_of(e.destinations),
                        None,
                        None,
                    )
                    for e in events
                ],
            )

    def stored_totals(self) -> tuple[int, int]:
        events, stored, _ = self._read(_STORED)[0]
        return int(events), int(stored)

    def healthy(self) -> bool:
        """False while the path is lost, the disk is full or getting there, or SQLite said it
        is full: then every event is written as without a spool, and refused as exactly."""
        if time.monotonic() >= self._next_look:
            with self._lock:
                self._look()
        return not (self._lost or self._low_space or self._disk_full or self._tight)

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
        scheduled_by = math.inf if schedule_horizon is None else schedule_horizon
        leased_by = math.inf if lease_horizon is None else lease_horizon
        while True:
            with self._write() as conn:
                more = self._route(conn)
                # The batches in flight: distinct live tokens, counted in this write
                # transaction (BEGIN IMMEDIATE), so no other claimer counts at the same time.
                if (
                    max_in_flight is not None
                    and self._in_flight(conn, destination, now, leased_by) >= max_in_flight
                ):
                    return []
                # Walk this destination's pending rows in order; dead rows are never seen.
                # The payloads come along: nearly always every row read is claimed.
                candidates = conn.execute(
                    "SELECT e.id, e.message_id, e.payload, e.size, d.attempts, d.since"
                    " FROM deliveries AS d INDEXED BY deliveries_by_state"
                    " JOIN events AS e ON e.id = d.event_id"
                    " WHERE d.destination = ?1 AND d.state = 'pending'"
                    # Past the horizons: written before the wall clock stepped back.
                    " AND (d.next_attempt_at <= ?2 OR d.next_attempt_at > ?3)"
                    " AND (d.claimed_until IS NULL OR d.claimed_until <= ?2"
                    " OR d.claimed_until > ?4)"
                    " ORDER BY d.event_id LIMIT ?5",
                    (destination, now, scheduled_by, leased_by, limit),
                ).fetchall()
                if len(candidates) < limit and more:
                    # Not a full request yet and events are left to route: commit this chunk
                    # and route the next in a transaction of its own (send() gets in between).
                    continue
                taken = candidates[: plan_batch([c[3] for c in candidates], limits, batch_size)]
                for chunk in _chunks([c[0] for c in taken]):
                    conn.execute(
                        "UPDATE deliveries SET claim_token = ?, claimed_until = ?"
                        f" WHERE destination = ? AND event_id IN ({','.join('?' * len(chunk))})",
                        (token, lease_until, destination, *chunk),
                    )
            return [ClaimedRow(*row) for row in taken]

    @staticmethod
    def _in_flight(conn: sqlite3.Connection, destination: str, now: float, leased_by: float) -> int:
        row = conn.execute(
            "SELECT count(DISTINCT claim_token) FROM deliveries"
            " WHERE destination = ? AND state = 'pending' AND claim_token IS NOT NULL"
            " AND claimed_until > ? AND claimed_until <= ?",
            (destination, now, leased_by),
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET claimed_until = ? WHERE claim_token = ? AND destination = ?",
                (lease_until, token, destination),
            )

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        with self._write() as conn:
            for chunk in _chunks(event_ids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    "DELETE FROM deliveries WHERE destination = ? AND claim_token = ?"
                    f" AND event_id IN ({marks})",
                    (destination, token, *chunk),
                )
                conn.execute(
                    f"DELETE FROM events WHERE id IN ({marks}) AND NOT EXISTS"
                    " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                    chunk,
                )

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
        self._settle(
            destination, token, event_ids, "next_attempt_at = ?", (next_attempt_at,),
            error=error, status_code=status_code, now=now,
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
        self._settle(
            destination, token, event_ids, "state = 'dead'", (),
            error=error, status_code=status_code, now=now,
        )  # fmt: skip

    def _settle(
        self,
        destination: str,
        token: str,
        event_ids: Sequence[int],
        change: str,
        values: tuple[Any, ...],
        *,
        error: str,
        status_code: int | None,
        now: float,
    ) -> None:
        """A failed attempt on claimed rows: count it, record the error, release the claim,
        and apply ``change`` (a fixed SET clause: retry later, or dead-letter)."""
        with self._write() as conn:
            for chunk in _chunks(event_ids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"UPDATE deliveries SET {change}, attempts = attempts + 1,"
                    " claim_token = NULL, claimed_until = NULL, last_error = ?, last_status = ?,"
                    " updated_at = ?"
                    f" WHERE destination = ? AND claim_token = ? AND event_id IN ({marks})",
                    (*values, error, status_code, now, destination, token, *chunk),
                )

    def release(self, destination: str, token: str) -> None:
        try:
            with self._write() as conn:
                conn.execute(_RELEASE, (token, destination))
        except OutboxUnavailableError:
            # The next write that goes through hands the rows back (the disk may be full just
            # now): they need not wait for their lease to run out.
            with self._lock:
                self._unreleased.add((destination, token))
            raise

    # -- reading ------------------------------------------------------------------------------

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        bound = up_to if up_to is not None else (1 << 62)
        with self._snapshot() as conn:
            routed = conn.execute("SELECT routed FROM totals").fetchone()[0]
            return {
                d: conn.execute(
                    "SELECT COUNT(*) FROM deliveries"
                    " WHERE destination = ? AND state = 'pending' AND event_id <= ?",
                    (d, bound),
                ).fetchone()[0]
                + conn.execute(
                    "SELECT COUNT(*) FROM events AS e, json_each(e.routes) AS r"
                    " WHERE e.id > ? AND e.id <= ? AND r.value = ?",
                    (routed, bound, d),
                ).fetchone()[0]
                for d in destinations
            }

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        bound = up_to if up_to is not None else (1 << 62)
        with self._snapshot() as conn:
            routed = conn.execute("SELECT routed FROM totals").fetchone()[0]
            return any(
                conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE destination = ?"
                    " AND state = 'pending' AND event_id <= ?) OR EXISTS (SELECT 1"
                    " FROM events AS e, json_each(e.routes) AS r"
                    " WHERE e.id > ? AND e.id <= ? AND r.value = ?)",
                    (d, bound, routed, bound, d),
                ).fetchone()[0]
                for d in destinations
            )

    def dead_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        with self._snapshot() as conn:
            return {
                d: conn.execute(
                    "SELECT COUNT(*) FROM deliveries WHERE destination = ? AND state = 'dead'",
                    (d,),
                ).fetchone()[0]
                for d in destinations
            }

    def high_water(self) -> int:
        row = self._read("SELECT MAX(id) FROM events")
        return int(row[0][0] or 0)

    def stats(self, now: float) -> OutboxStats:
        with self._snapshot() as conn:
            rows = conn.execute(
                "SELECT destination, CASE"
                " WHEN state = 'dead' THEN 'dead'"
                " WHEN claimed_until IS NOT NULL AND claimed_until > ? THEN 'in_flight'"
                " WHEN attempts > 0 THEN 'retrying'"
                " ELSE 'pending' END AS s, COUNT(*)"
                " FROM deliveries GROUP BY destination, s",
                (now,),
            ).fetchall()
            events, stored, routed = conn.execute(_STORED).fetchone()
            # Events not routed yet are pending for each destination they go to.
            rows += conn.execute(
                "SELECT r.value, 'pending', COUNT(*) FROM events AS e, json_each(e.routes) AS r"
                " WHERE e.id > ? GROUP BY r.value",
                (routed,),
            ).fetchall()
            oldest = conn.execute(
                "SELECT MIN(e.created_at) FROM deliveries AS d"
                " JOIN events AS e ON e.id = d.event_id WHERE d.state = 'pending'"
            ).fetchone()[0]
            if oldest is None:  # routed events are older than the others
                oldest = conn.execute(
                    "SELECT MIN(created_at) FROM events WHERE id > ?"
                    " AND json_array_length(routes) > 0",
                    (routed,),
                ).fetchone()[0]
        counts: dict[str, dict[str, int]] = {}
        for destination, state, count in sorted(rows):
            per = counts.setdefault(destination, {})
            per[state] = per.get(state, 0) + count
        return OutboxStats(counts=counts, events=events, bytes=stored, oldest_pending=oldest)

    # -- maintenance --------------------------------------------------------------------------

    def replay(self, destination: str | None, now: float) -> int:
        where = "state = 'dead'" + (" AND destination = ?" if destination is not None else "")
        params: tuple[Any, ...] = (now, now, now) + (
            (destination,) if destination is not None else ()
        )
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
                " since = ?, updated_at = ?, claim_token = NULL, claimed_until = NULL"
                f" WHERE {where}",
                params,
            )
            return cursor.rowcount

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        clauses = (["state = 'dead'"] if dead_only else []) + (
            ["destination = ?"] if destination is not None else []
        )
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        while True:
            with self._write() as conn:
                # Every event gets its rows first: the rows decide what is purged.
                if not self._route(conn):
                    break
        with self._write() as conn:
            while self._route(conn):
                pass  # what arrived since
            cursor = conn.execute(
                f"DELETE FROM deliveries{where}", (destination,) if destination is not None else ()
            )
            removed = cursor.rowcount
            conn.execute(
                "DELETE FROM events WHERE NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)"
            )
        return removed

    # -- lifecycle ----------------------------------------------------------------------------

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        while True:  # every event gets its rows first
            with self._write() as conn:
                if not self._route(conn):
                    break
        with self._write() as conn:
            events = conn.execute(
                "SELECT id, message_id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (after, limit),
            ).fetchall()
            if not events:
                return []
            rows: dict[int, list[tuple[str, str, int, str | None, int | None]]] = {}
            for event_id, *row in conn.execute(
                "SELECT event_id, destination, state, attempts, last_error, last_status"
                " FROM deliveries WHERE event_id > ? AND event_id <= ? ORDER BY destination",
                (after, events[-1][0]),
            ):
                rows.setdefault(event_id, []).append(tuple(row))
        return [StoredEvent(i, m, p, tuple(rows.get(i, ()))) for i, m, p in events]

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Nothing kept: a SQLite outbox serves the processes of one machine."""

    def checkpoint(self) -> None:
        """Copy what the write-ahead log holds into the database file (``PASSIVE``: it never
        waits for, nor holds up, writers and readers), and ``trim()`` the log."""
        self._checkpoint(always=True)

    def trim(self) -> None:
        """When the write-ahead log is larger than ``WAL_LIMIT_BYTES``: copy all of it into
        the database and truncate it. Truncating needs a moment with no reader and no writer;
        when there is none it is left for the next checkpoint."""
        self._checkpoint(always=False)

    def _checkpoint(self, *, always: bool) -> None:
        if self._closed:
            return
        with self._lock:
            self._use()  # never checkpoint a file that is no longer at its path
        with self._checkpoint_lock:
            if self._closed:
                return
            try:
                if not always and _size(f"{self._path}-wal") <= WAL_LIMIT_BYTES:
                    return
                conn = self._checkpoint_conn
                if conn is None:
                    if identity(self._path) != self._identity:
                        return  # not the file we opened: the next _use() says so
                    conn = sqlite3.connect(
                        self._path,
                        timeout=0,  # busy means "not now": never wait for (or hold up) a send
                        isolation_level=None,
                        check_same_thread=False,  # every use is under self._checkpoint_lock
                    )
                    conn.execute(f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}")
                    self._checkpoint_conn = conn
                busy, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                if not busy and frames == copied and _size(f"{self._path}-wal") > WAL_LIMIT_BYTES:
                    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from exc

    def before_fork(self) -> None:
        """No thread may be inside SQLite when the process forks (a mutex held by a thread
        the child does not have would hang the child): neither a send() nor a worker (the
        connection's lock) nor a checkpoint (its own lock, always taken second)."""
        self._fork_locks.hold(self._lock, self._checkpoint_lock)

    def after_fork_in_parent(self) -> None:
        self._fork_locks.release()

    def after_fork_in_child(self) -> None:
        # The locks were the parent's (held by before_fork()): the child makes its own.
        self._fork_locks.forget()
        self._lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        for conn in (self._conn, self._checkpoint_conn):
            if conn is not None:
                _abandoned.append(conn)
        self._conn = self._checkpoint_conn = None
        self._unreleased = set()  # the parent's workers' claims: the parent hands them back

    def close(self) -> None:
        """Close the connections (never raises: SQLite's last checkpoint is best effort)."""
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            _close(conn)
        with self._checkpoint_lock:
            conn, self._checkpoint_conn = self._checkpoint_conn, None
            _close(conn)

    def __repr__(self) -> str:
        return f"SQLiteOutbox({self.location!r})"


_RELEASE = (
    "UPDATE deliveries SET claim_token = NULL, claimed_until = NULL"
    " WHERE claim_token = ? AND destination = ?"
)
_NOT_ACCEPTED = "The event was not accepted; events accepted earlier are kept."


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _rollback(conn: sqlite3.Connection) -> None:
    """End the open transaction, if any (SQLite ends some itself when a write fails)."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _close(conn: sqlite3.Connection | None) -> None:
    if conn is None:
        return
    try:
        conn.close()
    except sqlite3.Error as exc:
        log.debug("outbox_close_failed", error=f"{type(exc).__name__}: {exc}")


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _split(script: str) -> list[str]:
    """The schema's statements one by one (``executescript`` would commit our transaction)."""
    statements: list[str] = []
    current: list[str] = []
    for line in script.strip().splitlines():
        if line.lstrip().startswith("--"):
            continue
        current.append(line)
        joined = "\n".join(current)
        if sqlite3.complete_statement(joined):
            statements.append(joined)
            current = []
    return statements
