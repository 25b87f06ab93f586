"""The durable outbox: one SQLite file in WAL mode (stdlib ``sqlite3``).

**The event log and per-destination cursors.** Each event's JSON is stored once in ``events``
(``id`` ascending, never reused), with ``routes``, the JSON array of the destinations it goes
to. Most events are delivered without any other row being written for them: each destination
has a *cursor* (``cursors.next_id``, the first event id its happy path has not taken), and a
claim takes the next events at or past it whose ``routes`` name the destination, writes ONE
``batches`` row (token, destination, ``first_id``..``last_id``, lease) and moves the cursor
past them. Acknowledging exactly that batch deletes the ``batches`` row. For each destination
``d`` and each event ``e`` routed to it, exactly one of these holds:

* ``e.id >= cursor(d)``: fresh (pending, never attempted);
* ``e`` lies in a ``batches`` row of ``d`` (claimed; or free again once the lease ran out);
* ``deliveries`` has a row ``(d, e.id)``, as every row did before: ``pending`` or ``dead``,
  attempts, schedule, claim;
* delivered (nothing left).

Rows are made only for events that need them: a batch is *materialized* (a ``deliveries``
row per event, under the same token and lease, so nothing changes for its holder) when it is
settled other than by acknowledging all of it (split, retried, dead-lettered, partly
acknowledged, released) and when its lease ran out (by the next claim of its destination). A
destination that has claimed nothing for ``_IDLE_S`` (removed from the config, say) has its
events materialized as pending rows by the other destinations' claims, so that it never holds
back the deletion of events it has nothing to do with.

**Deleting delivered events** goes by range: below the *low watermark* (the least of every
cursor and every batch's ``first_id``) an event without a ``deliveries`` row is delivered
everywhere it was going. Whoever settles deletes the events between ``totals.swept`` (below
it this was done) and the watermark, one statement, when the watermark moved; an event whose
last row goes is deleted with it. A destination that has a cursor but is no longer
configured holds its events back (as its pending rows did before); ``outbox purge`` clears
them.

``send()`` writes one row and nothing else (one row, no index, no trigger keeps its commit
short), plus a cursor row the first time a process sends to a destination. The size limits
are still checked exactly on every ``send()`` without counting rows: ``totals`` holds the
events and bytes stored up to ``totals.counted`` (folded in whenever events are deleted, and
reduced by a trigger on delete), and the events above it are counted from their ids (they are
consecutive and never deleted before they are counted) and ``total``, the running sum of the
sizes in each event row.

Claims use ``BEGIN IMMEDIATE`` (SQLite's write lock), so two processes can never claim the
same events; a claim is a token plus a lease deadline, so events held by a process that died
are claimable again once the deadline passes.

Files at schema version 1 (a row per destination made lazily, "routing") are migrated in
place when opened: the cursors start after the last routed event, whose rows all exist.

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
from collections.abc import Iterable, Iterator, Sequence
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
    routes_json,
)

__all__ = ["APPLICATION_ID", "SCHEMA_VERSION", "SQLiteOutbox"]

log = get_logger("event_router.outbox")

SCHEMA_VERSION = 2
APPLICATION_ID = 0x45565254  # "EVRT" in the file header: this file is an event-router outbox
_TABLES = frozenset({"events", "deliveries", "totals"})  # outboxes made before APPLICATION_ID

_DELIVERIES = """
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
"""

# What version 2 adds to version 1 (the migration runs these too).
_CURSORS = """
-- quoted: the name as json.dumps() writes it in events.routes (matched with instr()).
-- claimed_at: the destination's last claim, to tell one that nobody delivers any more.
CREATE TABLE cursors (
    destination TEXT PRIMARY KEY,
    quoted TEXT NOT NULL,
    next_id INTEGER NOT NULL,
    claimed_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE batches (
    destination TEXT NOT NULL,
    token TEXT NOT NULL,
    first_id INTEGER NOT NULL,
    last_id INTEGER NOT NULL,
    count INTEGER NOT NULL,
    claimed_until REAL NOT NULL,
    PRIMARY KEY (destination, token)
) WITHOUT ROWID;
"""

_SCHEMA = (
    """
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    message_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    routes TEXT,
    total INTEGER
);
"""
    + _DELIVERIES
    + _CURSORS
    + """
CREATE TABLE totals (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    events INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    counted INTEGER NOT NULL DEFAULT 0,
    counted_total INTEGER NOT NULL DEFAULT 0,
    swept INTEGER NOT NULL DEFAULT 0
);
INSERT INTO totals (id, events, bytes) VALUES (1, 0, 0);
CREATE TRIGGER events_removed AFTER DELETE ON events BEGIN
    UPDATE totals SET events = events - 1, bytes = bytes - OLD.size WHERE id = 1;
END;
"""
)

# The newest event, and what is stored: t.events/t.bytes up to t.counted, plus the events
# above it (ids consecutive from t.counted + 1; ``total`` is the running sum of sizes).
_NEWEST = "(SELECT id, total FROM events ORDER BY id DESC LIMIT 1)"
_STORED_EVENTS = "t.events + max(coalesce(e.id, 0) - t.counted, 0)"
_STORED_BYTES = "t.bytes + CASE WHEN e.id > t.counted THEN e.total - t.counted_total ELSE 0 END"

# One statement: the size check and the insert are atomic without BEGIN ... COMMIT.
# Parameters: message_id, payload, size, created_at, routes, max_events, max_bytes.
_INSERT = (
    "INSERT INTO events (id, message_id, payload, size, created_at, routes, total)"
    " SELECT max(t.counted, coalesce(e.id, 0)) + 1, ?1, ?2, ?3, ?4, ?5,"
    " CASE WHEN e.id > t.counted THEN e.total ELSE t.counted_total END + ?3"
    f" FROM totals AS t LEFT JOIN {_NEWEST} AS e"
    f" WHERE (?6 IS NULL OR {_STORED_EVENTS} < ?6)"
    f" AND (?7 IS NULL OR {_STORED_BYTES} + ?3 <= ?7)"
)
_STORED = (
    f"SELECT {_STORED_EVENTS}, {_STORED_BYTES}, t.counted FROM totals AS t LEFT JOIN {_NEWEST} AS e"
)
# Before events are deleted: count the events above t.counted into t.events/t.bytes, so
# that the trigger on delete can take them off again.
# Before events are deleted: count the events above t.counted into t.events/t.bytes, so
# that the trigger on delete can take them off again (all old values on the right).
_FOLD = (
    "UPDATE totals SET events = events + (SELECT max(id) FROM events) - counted,"
    f" bytes = bytes + (SELECT total FROM {_NEWEST}) - counted_total,"
    " counted = (SELECT max(id) FROM events),"
    f" counted_total = (SELECT total FROM {_NEWEST})"
    " WHERE id = 1 AND (SELECT max(id) FROM events) > counted"
)

# The low watermark: no cursor and no batch is below it (1 << 62 when there are none).
_WATERMARK = (
    "SELECT min(coalesce((SELECT min(next_id) FROM cursors), 1 << 62),"
    " coalesce((SELECT min(first_id) FROM batches), 1 << 62))"
)
# An event's routes name the destination: ``?`` twice, the two _patterns() of its name.
_ROUTED = "(instr(routes, ?) > 0 OR instr(routes, ?) > 0)"
# OR IGNORE: an event that somehow has its row already keeps that one (exactly one stays).
_MATERIALIZE = (
    "INSERT OR IGNORE INTO deliveries (destination, event_id, next_attempt_at, since, claim_token,"
    " claimed_until, updated_at) SELECT ?, id, created_at, created_at, ?, ?, created_at"
    f" FROM events WHERE id >= ? AND id <= ? AND {_ROUTED}"
)
_FRESH = (
    "SELECT id, message_id, payload, size, 0, created_at FROM events"
    f" WHERE id >= ? AND id < ? AND {_ROUTED} ORDER BY id LIMIT ?"
)

_SCAN = 8192  # event ids a claim looks through per statement for its destination's events
_MAX_SCAN = 65536  # and at most in one claim (a destination few events go to)
# A destination with no claim for this long (its worker gone, or removed from the config):
# the other destinations' claims turn its fresh events into rows, _HELP_CHUNK ids at a time,
# so that its cursor never holds back the deletion of events it does not need.
_IDLE_S = 900.0
_HELP_CHUNK = 8192
_CLAIMED_AT_EVERY_S = 60.0  # how stale cursors.claimed_at may get before a claim writes it
_MAX_CACHED_ROUTES = 256
_MAX_KNOWN_BATCHES = 4096

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
        # Destinations known to have a cursor in this file (cursors are never deleted).
        self._cursored: set[str] = set()
        self._ready: set[tuple[str, ...]] = set()  # destination lists that all have one
        # Batches this process claimed: token -> (destination, their event ids), so that an
        # acknowledgment is known to cover one exactly without reading the events again.
        self._batches: dict[str, tuple[str, frozenset[int]]] = {}
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

    def _schema_state(
        self, conn: sqlite3.Connection
    ) -> Literal["current", "empty", "old", "unmarked"]:
        """What the file holds: our current schema, nothing yet, our schema at an older
        version, or our schema from before ``application_id`` was set. Refuses anything else
        without writing to it."""
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
            if version == SCHEMA_VERSION:
                return "current"
            return "old" if version >= 1 else "empty"
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
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if state == "empty":
                for statement in _split(_SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version == 1:
                _migrate_from_v1(conn)
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
        """Look at the path and the disk (under ``self._lock``); ``_use()`` acts on it.

        The next look is scheduled when this one is done: ``healthy()`` reads the flags
        without the lock, and must not take a look still under way for one that found
        nothing."""
        now = time.monotonic()
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
        # Nearly full: look before every use.
        self._next_look = now if self._tight else now + _CHECK_S

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
    def _write(
        self, *, accepting: bool = False, consequence: str = ""
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction, under the lock (``accepting``: to store new events)."""
        with self._lock:
            conn = self._use(accepting=accepting)
            unreleased = tuple(self._unreleased)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for destination, token in unreleased:
                        self._release_in(conn, destination, token)
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc, consequence) from exc
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

    def _uncursored(self, destinations: Iterable[str]) -> list[str]:
        """The destinations this process has not seen a cursor of (not under the lock: a
        destination is only ever added, once its cursor is committed)."""
        known = self._cursored
        return [d for d in destinations if d not in known]

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
        key = tuple(destinations)
        params = (message_id, payload, size, now, routes_json(key), max_events, max_bytes)
        # Destination lists seen before in this process have their cursors: no lookups.
        new = [] if key in self._ready else self._uncursored(key)
        if not new:
            with self._lock:
                conn = self._use(accepting=True)
                try:
                    if conn.execute(_INSERT, params).rowcount == 1:
                        if self._disk_full:
                            self._wrote()
                        if key not in self._ready and len(self._ready) < _MAX_CACHED_ROUTES:
                            self._ready.add(key)
                        return None
                except (sqlite3.Error, OSError) as exc:
                    raise self._failed(exc, _NOT_ACCEPTED) from exc
        # Full (or it looked so), or a destination without a cursor yet: decide which limit
        # in a transaction, and store the event after all if another process made room in
        # between; the cursor starts at the event (or earlier, made by another process).
        with self._write(accepting=True, consequence=_NOT_ACCEPTED) as conn:
            events, stored, _ = conn.execute(_STORED).fetchone()
            if max_events is not None and events + 1 > max_events:
                return ("max_events", max_events, events)
            if max_bytes is not None and stored + size > max_bytes:
                return ("max_bytes", max_bytes, stored)
            event_id = conn.execute(_INSERT, params).lastrowid
            if new and event_id is not None:
                _add_cursors(conn, new, event_id, now)
        self._cursored.update(new)
        if len(self._ready) < _MAX_CACHED_ROUTES:
            self._ready.add(key)
        return None

    def enqueue_many(self, events: Sequence[AcceptedEvent]) -> None:
        """Store events that were already accepted (moved from a process's spool), in one
        transaction, WITHOUT the size limits (an accepted event is never refused), each with
        its destinations.

        Nor does the room kept free on the disk for delivery refuse them (they hold disk
        space already, in the spool); a disk that is really full raises
        ``OutboxDiskFullError``, and nothing is stored then.
        """
        if not events:
            return
        new = self._uncursored(dict.fromkeys(d for e in events for d in e.destinations))
        with self._write(consequence=_NOT_MOVED) as conn:
            counted, counted_total = conn.execute(
                "SELECT counted, counted_total FROM totals"
            ).fetchone()
            newest = conn.execute(_NEWEST[1:-1]).fetchone()
            event_id, total = newest if newest is not None and newest[0] > counted else (
                counted, counted_total
            )  # fmt: skip
            first = event_id + 1
            rows = []
            for event in events:
                payload = event.payload
                size = len(payload) if payload.isascii() else len(payload.encode())
                event_id += 1
                total += size
                rows.append((
                    event_id, event.message_id, payload, size, event.accepted_at,
                    routes_json(tuple(event.destinations)), total,
                ))  # fmt: skip
            conn.executemany(
                "INSERT INTO events (id, message_id, payload, size, created_at, routes, total)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            if new:
                _add_cursors(conn, new, first, time.time())
        self._cursored.update(new)

    def stored_totals(self) -> tuple[int, int]:
        """``(events, bytes)`` stored, as the size limits count them (one read, no
        transaction: a single statement sees one state)."""
        with self._lock:
            conn = self._use()
            try:
                events, stored, _ = conn.execute(_STORED).fetchone()
            except (sqlite3.Error, OSError) as exc:
                raise self._failed(exc) from exc
        return int(events), int(stored)

    def healthy(self) -> bool:
        """False while the path is lost, the disk is full or getting there, or SQLite said it
        is full: then every event is written as without a spool, and refused as exactly.

        Never waits: when a look at the path and the disk is due and a worker holds the
        connection, it answers False, and ``enqueue()`` (which waits for the connection)
        takes the look itself; that happens at most once per look interval."""
        if time.monotonic() >= self._next_look:
            if not self._lock.acquire(blocking=False):
                return False
            try:
                self._look()
            finally:
                self._lock.release()
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
        patterns = _patterns(destination)
        with self._write() as conn:
            # Batches whose lease ran out (or lasts past the horizon) become rows, claimable
            # below under the same conditions as any row.
            for (expired,) in conn.execute(
                "SELECT token FROM batches WHERE destination = ?"
                " AND (claimed_until <= ? OR claimed_until > ?)",
                (destination, now, leased_by),
            ).fetchall():
                self._materialize(conn, destination, expired)
            # The batches in flight: distinct live tokens, counted in this write
            # transaction (BEGIN IMMEDIATE), so no other claimer counts at the same time.
            if (
                max_in_flight is not None
                and self._in_flight(conn, destination, now, leased_by) >= max_in_flight
            ):
                return []
            # Rows first (retried, split, released: every row is older than the cursor),
            # then fresh events from the cursor. Dead rows are never seen.
            rows = conn.execute(
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
            cursor = conn.execute(
                "SELECT next_id, claimed_at FROM cursors WHERE destination = ?", (destination,)
            ).fetchone()
            fresh: list[Any] = []
            scanned_to = 0
            if cursor is not None and len(rows) < limit:
                fresh, scanned_to = _fresh(conn, cursor[0], limit - len(rows), patterns)
            candidates = rows + fresh  # ClaimedRow's fields (never attempted, since accepted)
            taken = candidates[: plan_batch([c[3] for c in candidates], limits, batch_size)]
            taken_rows, batch = taken[: len(rows)], taken[len(rows) :]
            for chunk in _chunks([c[0] for c in taken_rows]):
                conn.execute(
                    "UPDATE deliveries SET claim_token = ?, claimed_until = ?"
                    f" WHERE destination = ? AND event_id IN ({','.join('?' * len(chunk))})",
                    (token, lease_until, destination, *chunk),
                )
            if cursor is not None:
                next_id, claimed_at = cursor
                if batch:
                    # A token claimed with again (never by our workers): the first batch
                    # becomes rows under it, as every claim was before.
                    self._materialize(conn, destination, token)
                    conn.execute(
                        "INSERT INTO batches (destination, token, first_id, last_id, count,"
                        " claimed_until) VALUES (?, ?, ?, ?, ?, ?)",
                        (destination, token, batch[0][0], batch[-1][0], len(batch), lease_until),
                    )
                if fresh:  # past the events taken, and past the others of the scan
                    next_id = fresh[len(batch)][0] if len(batch) < len(fresh) else scanned_to
                elif len(rows) < limit:
                    next_id = scanned_to
                if next_id != cursor[0] or abs(now - claimed_at) > _CLAIMED_AT_EVERY_S:
                    conn.execute(
                        "UPDATE cursors SET next_id = ?, claimed_at = ? WHERE destination = ?",
                        (next_id, now, destination),
                    )
            self._help(conn, destination, now)
            if batch:  # under the lock, as every use of self._batches
                if len(self._batches) >= _MAX_KNOWN_BATCHES:
                    self._batches.pop(next(iter(self._batches)))  # settled by another process
                self._batches[token] = (destination, frozenset(c[0] for c in batch))
        return [ClaimedRow(*row) for row in taken]

    @staticmethod
    def _in_flight(conn: sqlite3.Connection, destination: str, now: float, leased_by: float) -> int:
        row = conn.execute(
            "SELECT count(*) FROM (SELECT claim_token FROM deliveries"
            " WHERE destination = ?1 AND state = 'pending' AND claim_token IS NOT NULL"
            " AND claimed_until > ?2 AND claimed_until <= ?3"
            " UNION SELECT token FROM batches"
            " WHERE destination = ?1 AND claimed_until > ?2 AND claimed_until <= ?3)",
            (destination, now, leased_by),
        ).fetchone()
        return int(row[0]) if row is not None else 0

    def _help(self, conn: sqlite3.Connection, destination: str, now: float) -> None:
        """Move on what holds the low watermark when its own destination will not: a batch
        of another destination whose lease ran out becomes rows, and the cursor of a
        destination that has claimed nothing for ``_IDLE_S`` turns its next events into
        pending rows (nothing is lost; deleting no longer waits for it)."""
        holder = conn.execute(
            "SELECT destination, next_id, claimed_at FROM cursors ORDER BY next_id LIMIT 1"
        ).fetchone()
        if holder is None:
            return
        name, next_id, claimed_at = holder
        batch = conn.execute(
            "SELECT destination, token, first_id, claimed_until FROM batches"
            " ORDER BY first_id LIMIT 1"
        ).fetchone()
        if batch is not None and batch[2] <= next_id:
            if batch[0] != destination and batch[3] <= now:
                self._materialize(conn, batch[0], batch[1])
                self._collect(conn)
            return
        if name == destination or claimed_at >= now - _IDLE_S:
            return  # it still claims: it moves on by itself
        newest = conn.execute("SELECT max(id) FROM events").fetchone()[0]
        if newest is None or newest < next_id:
            return
        end = min(next_id + _HELP_CHUNK, newest + 1)
        if batch is not None:
            end = min(end, batch[2])
        conn.execute(_MATERIALIZE, (name, None, None, next_id, end - 1, *_patterns(name)))
        conn.execute("UPDATE cursors SET next_id = ? WHERE destination = ?", (end, name))
        self._collect(conn)

    def _materialize(self, conn: sqlite3.Connection, destination: str, token: str) -> bool:
        """Turn a batch into a ``deliveries`` row per event, under the same token and lease
        (its holder sees no difference). Returns False when there is no such batch."""
        batch = conn.execute(
            "SELECT first_id, last_id, claimed_until FROM batches"
            " WHERE destination = ? AND token = ?",
            (destination, token),
        ).fetchone()
        self._batches.pop(token, None)
        if batch is None:
            return False
        first, last, claimed_until = batch
        conn.execute(
            _MATERIALIZE, (destination, token, claimed_until, first, last, *_patterns(destination))
        )
        conn.execute(
            "DELETE FROM batches WHERE destination = ? AND token = ?", (destination, token)
        )
        return True

    def _is_batch(
        self, conn: sqlite3.Connection, destination: str, token: str, ids: set[int]
    ) -> bool:
        """Whether ``ids`` (as many as the batch holds, all within its range) are its events."""
        known = self._batches.get(token)
        if known is not None and known[0] == destination:
            return known[1] == ids
        routed = 0
        for chunk in _chunks(sorted(ids)):
            routed += conn.execute(
                f"SELECT count(*) FROM events WHERE id IN ({','.join('?' * len(chunk))})"
                f" AND {_ROUTED}",
                (*chunk, *_patterns(destination)),
            ).fetchone()[0]
        return routed == len(ids)

    def _batch_settled(
        self, conn: sqlite3.Connection, destination: str, token: str, event_ids: Sequence[int]
    ) -> Sequence[int]:
        """Settle the part of ``event_ids`` in the batch under ``token``: all of it
        acknowledged goes without a row written; anything else materializes the batch first.
        Returns the ids left for the rows (all of them once materialized)."""
        batch = conn.execute(
            "SELECT first_id, last_id, count FROM batches WHERE destination = ? AND token = ?",
            (destination, token),
        ).fetchone()
        if batch is None:
            return event_ids
        first, last, count = batch
        inside = {i for i in event_ids if first <= i <= last}
        if not inside:
            return event_ids
        if len(inside) == count and self._is_batch(conn, destination, token, inside):
            conn.execute(
                "DELETE FROM batches WHERE destination = ? AND token = ?", (destination, token)
            )
            self._batches.pop(token, None)
            return [i for i in event_ids if not first <= i <= last]
        self._materialize(conn, destination, token)
        return event_ids

    def _collect(self, conn: sqlite3.Connection, event_ids: Sequence[int] = ()) -> None:
        """Delete delivered events: those of ``event_ids`` whose last row went, and those
        the low watermark passed since the last time (by range)."""
        watermark = conn.execute(_WATERMARK).fetchone()[0]
        swept = conn.execute("SELECT swept FROM totals").fetchone()[0]
        below = [i for i in event_ids if i < min(watermark, swept)]
        if watermark <= swept and not below:
            return
        conn.execute(_FOLD)  # the trigger then takes each deleted event off the totals
        for chunk in _chunks(below):
            conn.execute(
                f"DELETE FROM events WHERE id IN ({','.join('?' * len(chunk))}) AND NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                chunk,
            )
        if watermark > swept:
            conn.execute(
                "DELETE FROM events WHERE id >= ? AND id < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                (swept, watermark),
            )
            conn.execute("UPDATE totals SET swept = ? WHERE id = 1", (watermark,))

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE deliveries SET claimed_until = ? WHERE claim_token = ? AND destination = ?",
                (lease_until, token, destination),
            )
            conn.execute(
                "UPDATE batches SET claimed_until = ? WHERE token = ? AND destination = ?",
                (lease_until, token, destination),
            )

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        if not event_ids:
            return
        with self._write() as conn:
            rows = self._batch_settled(conn, destination, token, event_ids)
            for chunk in _chunks(rows):
                conn.execute(
                    "DELETE FROM deliveries WHERE destination = ? AND claim_token = ?"
                    f" AND event_id IN ({','.join('?' * len(chunk))})",
                    (destination, token, *chunk),
                )
            self._collect(conn, rows)

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
        if not event_ids:
            return
        with self._write() as conn:
            batch = conn.execute(
                "SELECT first_id, last_id FROM batches WHERE destination = ? AND token = ?",
                (destination, token),
            ).fetchone()
            if batch is not None and any(batch[0] <= i <= batch[1] for i in event_ids):
                self._materialize(conn, destination, token)
            for chunk in _chunks(event_ids):
                marks = ",".join("?" * len(chunk))
                conn.execute(
                    f"UPDATE deliveries SET {change}, attempts = attempts + 1,"
                    " claim_token = NULL, claimed_until = NULL, last_error = ?, last_status = ?,"
                    " updated_at = ?"
                    f" WHERE destination = ? AND claim_token = ? AND event_id IN ({marks})",
                    (*values, error, status_code, now, destination, token, *chunk),
                )
            self._collect(conn)

    def release(self, destination: str, token: str) -> None:
        try:
            with self._write() as conn:
                if self._release_in(conn, destination, token):
                    self._collect(conn)
        except OutboxUnavailableError:
            # The next write that goes through hands the rows back (the disk may be full just
            # now): they need not wait for their lease to run out.
            with self._lock:
                self._unreleased.add((destination, token))
            raise

    def _release_in(self, conn: sqlite3.Connection, destination: str, token: str) -> bool:
        """Hand back what ``token`` holds (a batch becomes rows first). Returns True when
        there was a batch."""
        materialized = self._materialize(conn, destination, token)
        conn.execute(_RELEASE, (token, destination))
        return materialized

    # -- reading ------------------------------------------------------------------------------

    @staticmethod
    def _unrowed(
        conn: sqlite3.Connection, destination: str, bound: int
    ) -> Iterator[tuple[int, int, int | None, float | None]]:
        """The ranges of ``destination``'s events without a row, up to ``bound``:
        ``(first, last, count if known, claimed_until)`` for its batches, then its fresh
        events (``claimed_until`` None)."""
        for first, last, count, claimed_until in conn.execute(
            "SELECT first_id, last_id, count, claimed_until FROM batches"
            " WHERE destination = ? AND first_id <= ?",
            (destination, bound),
        ).fetchall():
            yield first, min(last, bound), count if last <= bound else None, claimed_until
        cursor = conn.execute(
            "SELECT next_id FROM cursors WHERE destination = ?", (destination,)
        ).fetchone()
        if cursor is not None and cursor[0] <= bound:
            yield cursor[0], bound, None, None

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        bound = up_to if up_to is not None else (1 << 62)
        counts: dict[str, int] = {}
        with self._snapshot() as conn:
            for d in destinations:
                counts[d] = conn.execute(
                    "SELECT COUNT(*) FROM deliveries"
                    " WHERE destination = ? AND state = 'pending' AND event_id <= ?",
                    (d, bound),
                ).fetchone()[0]
                for first, last, count, _ in self._unrowed(conn, d, bound):
                    counts[d] += count if count is not None else _count(conn, d, first, last)
        return counts

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        bound = up_to if up_to is not None else (1 << 62)
        with self._snapshot() as conn:
            for d in destinations:
                if conn.execute(
                    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE destination = ?"
                    " AND state = 'pending' AND event_id <= ?)",
                    (d, bound),
                ).fetchone()[0]:
                    return True
                for first, last, count, _ in self._unrowed(conn, d, bound):
                    if (
                        count
                        or conn.execute(
                            "SELECT EXISTS (SELECT 1 FROM events"
                            f" WHERE id >= ? AND id <= ? AND {_ROUTED})",
                            (first, last, *_patterns(d)),
                        ).fetchone()[0]
                    ):
                        return True
        return False

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
            events, stored, _ = conn.execute(_STORED).fetchone()
            oldest = conn.execute(
                "SELECT MIN(e.created_at) FROM deliveries AS d"
                " JOIN events AS e ON e.id = d.event_id WHERE d.state = 'pending'"
            ).fetchone()[0]
            # Batches are in flight while their lease lives; fresh events are pending.
            for (d,) in conn.execute("SELECT destination FROM cursors").fetchall():
                for first, last, _, claimed_until in self._unrowed(conn, d, 1 << 62):
                    n, first_at = conn.execute(
                        f"SELECT count(*), min(created_at) FROM events"
                        f" WHERE id >= ? AND id <= ? AND {_ROUTED}",
                        (first, last, *_patterns(d)),
                    ).fetchone()
                    if not n:
                        continue
                    live = claimed_until is not None and claimed_until > now
                    rows.append((d, "in_flight" if live else "pending", n))
                    oldest = first_at if oldest is None else min(oldest, first_at)
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
        only = (destination,) if destination is not None else ()
        removed = 0
        with self._write() as conn:
            if not dead_only:
                # The events without rows (fresh, or in batches) go too: the cursors move
                # past every event stored.
                end = conn.execute(
                    "SELECT coalesce(max(id), (SELECT counted FROM totals)) + 1 FROM events"
                ).fetchone()[0]
                names = [
                    d
                    for (d,) in conn.execute(
                        "SELECT destination FROM cursors"
                        + (" WHERE destination = ?" if destination is not None else ""),
                        only,
                    ).fetchall()
                ]
                for d in names:
                    for first, last, count, _ in self._unrowed(conn, d, end - 1):
                        removed += count if count is not None else _count(conn, d, first, last)
                    conn.execute("DELETE FROM batches WHERE destination = ?", (d,))
                    # claimed_at 0: should nobody deliver it any more, its cursor is moved
                    # along by the other destinations' claims straight away.
                    conn.execute(
                        "UPDATE cursors SET next_id = max(next_id, ?), claimed_at = 0"
                        " WHERE destination = ?",
                        (end, d),
                    )
            removed += conn.execute(f"DELETE FROM deliveries{where}", only).rowcount
            conn.execute(_FOLD)
            watermark = conn.execute(_WATERMARK).fetchone()[0]
            conn.execute(
                "DELETE FROM events WHERE id < ? AND NOT EXISTS"
                " (SELECT 1 FROM deliveries AS d WHERE d.event_id = events.id)",
                (watermark,),
            )
            conn.execute("UPDATE totals SET swept = max(swept, ?) WHERE id = 1", (watermark,))
        return removed

    # -- lifecycle ----------------------------------------------------------------------------

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        with self._snapshot() as conn:
            events = conn.execute(
                "SELECT id, message_id, payload, routes FROM events WHERE id > ? ORDER BY id"
                " LIMIT ?",
                (after, limit),
            ).fetchall()
            if not events:
                return []
            rows: dict[int, list[tuple[str, str, int, str | None, int | None]]] = {}
            for event_id, *row in conn.execute(
                "SELECT event_id, destination, state, attempts, last_error, last_status"
                " FROM deliveries WHERE event_id > ? AND event_id <= ?",
                (after, events[-1][0]),
            ):
                rows.setdefault(event_id, []).append(tuple(row))
            cursors = dict(conn.execute("SELECT destination, next_id FROM cursors").fetchall())
            batches = conn.execute(
                "SELECT destination, first_id, last_id FROM batches WHERE last_id > ?", (after,)
            ).fetchall()
        # Fresh and batched events: a pending row, never attempted, for each such route.
        for event_id, _, _, routes in events:
            for d in json.loads(routes or "[]"):
                if (d in cursors and event_id >= cursors[d]) or any(
                    b == d and first <= event_id <= last for b, first, last in batches
                ):
                    rows.setdefault(event_id, []).append((d, "pending", 0, None, None))
        return [
            StoredEvent(i, m, p, tuple(sorted(rows.get(i, ()), key=lambda r: r[0])))
            for i, m, p, _ in events
        ]

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
        self._batches = {}

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
_NOT_MOVED = "None of these events was stored; they stay where they were."


def _patterns(destination: str) -> tuple[str, str]:
    """What ``instr()`` looks for in ``events.routes`` (``json.dumps`` of a list) for an
    element equal to ``destination``: its JSON string right after the ``[`` or the ``", "``
    (a ``"`` inside an element is always escaped, so these never match inside one)."""
    quoted = json.dumps(destination)
    return "[" + quoted, " " + quoted


def _fresh(
    conn: sqlite3.Connection, start: int, want: int, patterns: tuple[str, str]
) -> tuple[list[Any], int]:
    """Up to ``want`` events from id ``start`` on routed to the destination (``patterns``),
    and the id the scan got to: every event before it was looked at."""
    newest = conn.execute("SELECT max(id) FROM events").fetchone()[0]
    if newest is None:
        return [], start
    found: list[Any] = []
    position = start
    end = min(newest + 1, start + _MAX_SCAN)
    while position < end:
        upto = min(position + _SCAN, end)
        got = conn.execute(_FRESH, (position, upto, *patterns, want - len(found))).fetchall()
        found += got
        if len(found) >= want:
            return found, got[-1][0] + 1
        position = upto
    return found, position


def _count(conn: sqlite3.Connection, destination: str, first: int, last: int) -> int:
    """How many events with ids ``first``..``last`` go to ``destination``."""
    row = conn.execute(
        f"SELECT count(*) FROM events WHERE id >= ? AND id <= ? AND {_ROUTED}",
        (first, last, *_patterns(destination)),
    ).fetchone()
    return int(row[0])


def _add_cursors(
    conn: sqlite3.Connection, destinations: Iterable[str], next_id: int, now: float
) -> None:
    """Cursors for destinations that have none yet, starting at ``next_id`` (no later than
    their first event). One made by another process meanwhile is kept: it is no later."""
    conn.executemany(
        "INSERT OR IGNORE INTO cursors (destination, quoted, next_id, claimed_at)"
        " VALUES (?, ?, ?, ?)",
        [(d, json.dumps(d), next_id, now) for d in destinations],
    )


def _migrate_from_v1(conn: sqlite3.Connection) -> None:
    """Schema version 1 to 2, in the caller's transaction. In version 1 every event up to
    ``totals.routed`` has all its rows, and the events above it have none: each destination
    gets a cursor just after ``routed``."""
    for statement in _split(_CURSORS):
        conn.execute(statement)
    conn.execute("ALTER TABLE totals RENAME COLUMN routed TO counted")
    conn.execute("ALTER TABLE totals RENAME COLUMN routed_total TO counted_total")
    conn.execute("ALTER TABLE totals ADD COLUMN swept INTEGER NOT NULL DEFAULT 0")
    routed = conn.execute("SELECT counted FROM totals").fetchone()[0]
    names = conn.execute(
        "SELECT r.value FROM events AS e, json_each(e.routes) AS r"
        " UNION SELECT destination FROM deliveries"
    ).fetchall()
    _add_cursors(conn, (str(name) for (name,) in names), routed + 1, time.time())
    # Below routed + 1 an event whose last row went was deleted with it.
    conn.execute("UPDATE totals SET swept = ? WHERE id = 1", (routed + 1,))


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
