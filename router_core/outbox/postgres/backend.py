"""The outbox in PostgreSQL: many processes on many machines share one queue.

The same shape as the SQLite outbox: ``events`` holds each event's JSON once, ``deliveries``
one row per destination (primary key ``(destination, event_id)``), so each destination is
acknowledged on its own. Acknowledged rows are deleted, and the event goes with the last row
that needs it. The JSON is ``text``, not ``jsonb``: it is stored and read back byte for byte
(the workers recognise the events this process stored by their JSON), with no parsing on the
server, and TOAST compresses large ones all the same.

Every method is one short transaction on an autocommit connection from a pool (no
transaction is left open between calls: that would hold back VACUUM for the whole database).

**Time** is the database's: leases (``claimed_until``), retry times and accept times are
``now()`` on the server, so workers on machines whose clocks disagree still agree on when a
lease ends. The ``now``/``lease_until``/``next_attempt_at`` arguments of the interface only
give lengths (``lease_until - now``); ``stats`` and ``ClaimedRow.since`` report server times.

**Claims**: ``SELECT ... FOR UPDATE SKIP LOCKED`` on the destination's oldest due rows (the
partial index ``deliveries_due`` walks them in order, dead rows left out), then an ``UPDATE``
that writes a token and ``claimed_until = now() + lease``. Every later change (ack, retry,
dead, extend, release) names the token, so a worker whose lease ran out and whose rows another
worker now holds changes nothing. ``claim_token`` is deliberately not indexed: claiming,
extending and retrying then change no indexed column and can be HOT updates (no index entry
written) wherever the page has room (``fillfactor = 50`` keeps half of each page for them).
This process remembers which rows it holds under each token, so ``extend`` and ``release``
find them by primary key, and a ``release`` after a fully acknowledged batch costs no round
trip at all.

**Removing** an event safely when two destinations acknowledge their last rows at the same
time: each acknowledgment first locks the events' rows (``FOR UPDATE``, in id order, so no
deadlock), then, in a second statement that sees what the other committed, deletes its rows
and every event no row needs any more.

**Backpressure** (``max_events``, ``max_bytes``) is exact without counting rows, and without
one hot row that every ``send()`` of every process would queue on: ``admitted`` holds
``SHARDS`` counter rows, and a connection adds to the one its backend pid picks
(``mod(pg_backend_pid(), SHARDS)``), so concurrent senders rarely wait for each other. Each row
also holds a *quota*: the fast path (one statement) admits an event when its own shard stays
within its quota, and the quotas of all shards add up to no more than the limit, so the fast
paths together can never pass it. When a shard's quota runs out, the slow path locks every
shard row (waiting for the senders in flight), counts exactly (``sum(admitted) - sum(removed)``;
``removed`` is kept by deletions, sharded the same way), refuses or admits the event, and
shares the room left among the shards again. Near the limit the slow path runs on most sends
(it is still one short transaction); far from it, it runs once per 1/``SHARDS`` of the room.
Refusals are only ever decided by the exact count.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from router_core.dburl import mask_url, password_of
from router_core.errors import RouterError, TransactionalSendError
from router_core.limits import BatchLimits
from router_core.logs import get_logger
from router_core.outbox.postgres.connections import app_connection
from router_core.outbox.postgres.schema import (
    SHARDS,
    MigrationResult,
    check_schema,
    migrate,
    quoted,
)
from router_core.outbox.store import (
    ClaimedRow,
    ForkLocks,
    OutboxStats,
    StoredEvent,
    WorkerInfo,
    plan_batch,
)
from router_core.secrets import redact, register_secret
from router_core.settings.queue import DEFAULT_SCHEMA

__all__ = ["PostgresOutbox", "PostgresOutboxError", "migrate_schema"]

log = get_logger("event_router.outbox")

T = TypeVar("T")
Conn = psycopg.Connection[tuple[Any, ...]]

_CHUNK = 5000  # rows per transaction in replay and purge: short transactions, bounded locks
_CONNECT_TIMEOUT_S = 10
_APPLICATION_NAME = "event-router"
_TX_TOTALS_S = 1.0  # how old the totals a transactional send is checked against may be

# Pools inherited across fork() are never used or closed in the child (their sockets are the
# parent's); keeping a reference stops the garbage collector from touching them.
_abandoned: list[ConnectionPool[Conn]] = []


class PostgresOutboxError(RouterError):
    """The PostgreSQL outbox could not be reached or refused a statement."""


class _Sql:
    """Every statement, with the schema filled in (once, when the outbox is opened)."""

    def __init__(self, schema: str) -> None:
        self._s = s = quoted(schema)
        shard = f"mod(pg_backend_pid(), {SHARDS})"
        insert_event = (
            f"INSERT INTO {s}.events (message_id, payload, size, destinations)"
            " SELECT %(message_id)s, %(payload)s, %(size)s, %(destinations)s"
        )
        insert_rows = (
            f"INSERT INTO {s}.deliveries (destination, event_id)"
            " SELECT name, event.id FROM event, unnest(%(destinations)s::text[]) AS name"
        )
        # One round trip: the shard's counter and quota, the event, its rows.
        self.enqueue = (
            f"WITH slot AS (UPDATE {s}.admitted"
            " SET events = events + 1, bytes = bytes + %(size)s"
            f" WHERE shard = {shard}"
            " AND limit_events IS NOT DISTINCT FROM %(max_events)s::bigint"
            " AND limit_bytes IS NOT DISTINCT FROM %(max_bytes)s::bigint"
            " AND (quota_events IS NULL OR events + 1 <= quota_events)"
            " AND (quota_bytes IS NULL OR bytes + %(size)s <= quota_bytes)"
            " RETURNING shard),"
            f" event AS ({insert_event} FROM slot RETURNING id),"
            f" made AS ({insert_rows})"
            " SELECT id FROM event"
        )
        self.lock_admitted = (
            f"SELECT shard, events, bytes FROM {s}.admitted ORDER BY shard FOR UPDATE"
        )
        # Admissions made inside apps' transactions count as stored once they commit
        # (subtracted here, as if removed, so the sums give what is stored).
        self.removed_totals = (
            "SELECT coalesce(sum(events), 0) - (SELECT coalesce(sum(events), 0)"
            f" FROM {s}.admitted_tx), coalesce(sum(bytes), 0) - (SELECT coalesce(sum(bytes), 0)"
            f" FROM {s}.admitted_tx), {shard} FROM {s}.removed"
        )
        self.enqueue_counted = (
            f"WITH event AS ({insert_event} RETURNING id), made AS ({insert_rows})"
            " SELECT id FROM event"
        )
        # Quotas: each shard may add its share of the room left on top of what it holds.
        mine = "CASE WHEN shard = %(mine)s THEN {} ELSE 0 END"
        self.rebalance = (
            f"UPDATE {s}.admitted SET"
            f" events = events + {mine.format(1)},"
            f" bytes = bytes + {mine.format('%(size)s')},"
            " limit_events = %(max_events)s, limit_bytes = %(max_bytes)s,"
            f" quota_events = events + {mine.format(1)} + %(share_events)s::bigint,"
            f" quota_bytes = bytes + {mine.format('%(size)s')} + %(share_bytes)s::bigint"
        )
        self.stored = (
            f"SELECT (SELECT sum(events) FROM {s}.admitted)"
            f" + (SELECT coalesce(sum(events), 0) FROM {s}.admitted_tx)"
            f" - (SELECT sum(events) FROM {s}.removed),"
            f" (SELECT sum(bytes) FROM {s}.admitted)"
            f" + (SELECT coalesce(sum(bytes), 0) FROM {s}.admitted_tx)"
            f" - (SELECT sum(bytes) FROM {s}.removed)"
        )
        self._scaling(s, shard, insert_event, insert_rows)

        # The due rows first (locked, in order), then their events by primary key: joining
        # in one scan would walk the events table from its oldest (dead-lettered) rows.
        self.claim = (
            "WITH due AS (SELECT event_id, attempts, since"
            f" FROM {s}.deliveries WHERE destination = %(destination)s AND state = 'pending'"
            # A time further ahead than any backoff (or lease) could have set was written
            # before the clock stepped back: due (or expired) now.
            " AND (next_attempt_at <= now()"
            " OR next_attempt_at > now() + make_interval(secs => %(schedule_window)s::float8))"
            " AND (claimed_until IS NULL OR claimed_until <= now()"
            " OR claimed_until > now() + make_interval(secs => %(lease_window)s::float8))"
            " ORDER BY event_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
            " SELECT due.event_id, e.message_id, e.payload, e.size, due.attempts,"
            " extract(epoch FROM due.since)::float8"
            f" FROM due JOIN {s}.events AS e ON e.id = due.event_id ORDER BY due.event_id"
        )
        held = (
            " WHERE destination = %(destination)s AND claim_token = %(token)s"
            " AND event_id = ANY(%(ids)s)"
        )
        # Rows held under a token this process does not know: found through the due index.
        by_token = (
            " WHERE destination = %(destination)s AND claim_token = %(token)s AND state = 'pending'"
        )
        lease = "now() + %(lease)s * interval '1 second'"
        self.take = (
            f"UPDATE {s}.deliveries SET claim_token = %(token)s, claimed_until = {lease}"
            " WHERE destination = %(destination)s AND event_id = ANY(%(ids)s)"
        )
        self.extend = f"UPDATE {s}.deliveries SET claimed_until = {lease}{held}"
        self.extend_by_token = f"UPDATE {s}.deliveries SET claimed_until = {lease}{by_token}"
        unclaim = f"UPDATE {s}.deliveries SET claim_token = NULL, claimed_until = NULL"
        self.release = unclaim + held
        self.release_by_token = unclaim + by_token
        failed = (
            " attempts = attempts + 1, claim_token = NULL, claimed_until = NULL,"
            " last_error = %(error)s, last_status = %(status)s, updated_at = now()"
        )
        self.retry = (
            f"UPDATE {s}.deliveries SET"
            " next_attempt_at = now() + %(delay)s * interval '1 second'," + failed + held
        )
        self.dead = f"UPDATE {s}.deliveries SET state = 'dead'," + failed + held

        self.lock_events = (
            f"SELECT id FROM {s}.events WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE"
        )
        self.ack = self.remove(f"DELETE FROM {s}.deliveries{held} RETURNING destination, event_id")
        where = (
            "(NOT %(dead_only)s OR state = 'dead')"
            " AND (%(destination)s::text IS NULL OR destination = %(destination)s)"
        )
        self.purge_lock = (
            f"SELECT e.id FROM {s}.events AS e WHERE e.id IN"
            f" (SELECT event_id FROM {s}.deliveries WHERE {where} LIMIT %(limit)s)"
            " ORDER BY e.id FOR UPDATE"
        )
        self.purge = self.remove(
            f"DELETE FROM {s}.deliveries WHERE {where} AND event_id = ANY(%(ids)s)"
            " RETURNING destination, event_id"
        )
        self.replay = (
            f"UPDATE {s}.deliveries SET state = 'pending', attempts = 0, next_attempt_at = now(),"
            " since = now(), updated_at = now(), claim_token = NULL, claimed_until = NULL"
            " WHERE (destination, event_id) IN (SELECT destination, event_id"
            f" FROM {s}.deliveries WHERE state = 'dead'"
            " AND (%(destination)s::text IS NULL OR destination = %(destination)s)"
            " LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
        )

        below = "AND event_id <= %(up_to)s"
        self.pending = (
            f"SELECT destination, count(*) FROM {s}.deliveries WHERE destination = ANY(%(names)s)"
            f" AND state = 'pending' {below} GROUP BY destination"
        )
        self.any_pending = (
            f"SELECT EXISTS (SELECT 1 FROM {s}.deliveries WHERE destination = ANY(%(names)s)"
            f" AND state = 'pending' {below})"
        )
        self.dead_counts = (
            f"SELECT destination, count(*) FROM {s}.deliveries WHERE destination = ANY(%(names)s)"
            " AND state = 'dead' GROUP BY destination"
        )
        self.high_water = f"SELECT coalesce(max(id), 0) FROM {s}.events"
        self.counts = (
            "SELECT destination, CASE WHEN state = 'dead' THEN 'dead'"
            " WHEN claimed_until > now() THEN 'in_flight'"
            " WHEN attempts > 0 THEN 'retrying' ELSE 'pending' END AS s, count(*)"
            f" FROM {s}.deliveries GROUP BY destination, s"
        )
        self.oldest = (
            f"SELECT extract(epoch FROM e.created_at)::float8 FROM {s}.events AS e"
            f" WHERE EXISTS (SELECT 1 FROM {s}.deliveries AS d WHERE d.event_id = e.id"
            " AND d.destination = ANY(e.destinations) AND d.state = 'pending')"
            " ORDER BY e.id LIMIT 1"
        )
        self.dead_tuples = (
            "SELECT relname::text, n_dead_tup FROM pg_stat_user_tables"
            " WHERE schemaname = %(schema)s AND relname IN"
            " ('events', 'deliveries', 'admitted', 'removed', 'claims', 'admitted_tx')"
            " ORDER BY relname"
        )

    def _scaling(self, s: str, shard: str, insert_event: str, insert_rows: str) -> None:
        """The statements of many workers and of transactional sends (schema version 2)."""
        # In the app's transaction: the event, its rows and an admission row of its own.
        self.enqueue_in_tx = (
            f"WITH event AS ({insert_event} RETURNING id), made AS ({insert_rows}),"
            f" counted AS (INSERT INTO {s}.admitted_tx (events, bytes) VALUES (1, %(size)s))"
            " SELECT id FROM event"
        )
        self.tx_check = f"SELECT current_database(), to_regclass('{s}.schema_version') IS NOT NULL"
        # Committed admissions of transactions moved into one shard's counter.
        self.fold = (
            f"WITH gone AS (DELETE FROM {s}.admitted_tx RETURNING events, bytes)"
            f" UPDATE {s}.admitted SET events = admitted.events + g.n, bytes = admitted.bytes + g.b"
            " FROM (SELECT coalesce(sum(events), 0) AS n, coalesce(sum(bytes), 0) AS b FROM gone)"
            f" AS g WHERE shard = {shard} AND g.n > 0"
        )
        self.database = "SELECT current_database()"

        # max_in_flight: the batches a destination has in flight, counted under a lock of
        # the destination's own (only claimers of capped destinations take it).
        self.lock_destination = "SELECT pg_advisory_xact_lock(hashtextextended(%(key)s, 0))"
        self.expire_claims = (
            f"DELETE FROM {s}.claims WHERE destination = %(destination)s AND claimed_until <= now()"
        )
        self.count_claims = f"SELECT count(*) FROM {s}.claims WHERE destination = %(destination)s"
        self.add_claim = (
            f"INSERT INTO {s}.claims (destination, token, claimed_until)"
            " VALUES (%(destination)s, %(token)s, now() + %(lease)s * interval '1 second')"
        )
        self.extend_claim = (
            f"UPDATE {s}.claims SET claimed_until = now() + %(lease)s * interval '1 second'"
            " WHERE destination = %(destination)s AND token = %(token)s"
        )
        self.drop_claim = (
            f"DELETE FROM {s}.claims WHERE destination = %(destination)s AND token = %(token)s"
        )

        self.heartbeat = (
            f"INSERT INTO {s}.workers AS w (id, host, pid, destinations, delivered, failed,"
            " stopped) VALUES (%(id)s, %(host)s, %(pid)s, %(destinations)s, %(delivered)s,"
            " %(failed)s, %(stopped)s) ON CONFLICT (id) DO UPDATE SET last_seen = now(),"
            " delivered = excluded.delivered, failed = excluded.failed, stopped = excluded.stopped"
        )
        # Rows of workers gone for a day are of no use to anyone.
        self.forget_workers = f"DELETE FROM {s}.workers WHERE last_seen < now() - interval '1 day'"
        self.workers = (
            "SELECT id, host, pid, destinations, extract(epoch FROM started_at)::float8,"
            " extract(epoch FROM last_seen)::float8, delivered, failed, stopped"
            f" FROM {s}.workers ORDER BY started_at, id"
        )

    def remove(self, delete_rows: str) -> str:
        """Delete rows (``delete_rows`` returns their keys), then each event that no row needs
        any more, and count what went in ``removed``; the result is the number of rows."""
        s = self._s
        return (
            f"WITH gone AS ({delete_rows}),"
            f" emptied AS (DELETE FROM {s}.events AS e WHERE e.id IN (SELECT event_id FROM gone)"
            f" AND NOT EXISTS (SELECT 1 FROM {s}.deliveries AS d"
            " WHERE d.destination = ANY(e.destinations) AND d.event_id = e.id"
            " AND NOT EXISTS (SELECT 1 FROM gone AS g"
            " WHERE g.destination = d.destination AND g.event_id = d.event_id))"
            " RETURNING e.size),"
            f" counted AS (UPDATE {s}.removed SET events = events + c.n, bytes = bytes + c.b"
            " FROM (SELECT count(*) AS n, coalesce(sum(size), 0) AS b FROM emptied) AS c"
            f" WHERE slot = mod(pg_backend_pid(), {SHARDS}) AND c.n > 0 RETURNING 1)"
            " SELECT count(*) FROM gone"
        )


class PostgresOutbox:
    """The outbox in a PostgreSQL schema (``[queue] url = "postgresql://..."``).

    Opening it checks the schema: a missing one is created (``create=False`` refuses
    instead), one of another version is refused (``SchemaVersionError``: run
    ``event-router outbox migrate``). Connections come from a pool opened on first use
    (``pool_size`` at most); ``timeout`` bounds the wait for one.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        create: bool = True,
        pool_size: int = 8,
        timeout: float = 10.0,
    ) -> None:
        self._url = url
        self._schema = schema
        self._location = _location(url, schema)
        self._sql = _Sql(schema)
        self._pool_size = pool_size
        self._timeout = timeout
        self._lock = threading.Lock()
        self._pool: ConnectionPool[Conn] | None = None
        self._closed = False
        # token -> (destination, ids of the rows this process holds under it)
        self._held: dict[str, tuple[str, set[int]]] = {}
        self._slots: set[str] = set()  # tokens whose batch holds a max_in_flight slot
        self._held_lock = threading.Lock()
        self._fork_locks = ForkLocks()
        self._database: str | None = None  # current_database(), for transactional sends
        self._tx_totals: tuple[int, int, float] | None = None  # stored events, bytes, when
        self.created: MigrationResult | None = None
        """Set when opening the outbox created its schema."""
        with self._errors("cannot open"), self._connect() as conn:
            self.created = check_schema(conn, schema, self._location, create=create)
            row = conn.execute(self._sql.database).fetchone()
            self._database = str(row[0]) if row is not None else None

    @property
    def location(self) -> str:
        """The URL with its password masked, and the schema."""
        return self._location

    @property
    def schema(self) -> str:
        return self._schema

    @property
    def durable(self) -> bool:
        return True

    @property
    def housekeeping_interval(self) -> None:
        """None: autovacuum keeps the tables (``outbox status`` shows dead tuples)."""
        return None

    # -- connections --------------------------------------------------------------------------

    def _connect(self) -> Conn:
        return _connect(self._url)

    def _get_pool(self) -> ConnectionPool[Conn]:
        pool = self._pool
        if pool is not None:
            return pool
        with self._lock:
            if self._closed:
                raise RuntimeError(f"the outbox {self.location} is closed")
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=self._pool_size,
                    kwargs=_connection_options(self._url),
                    timeout=self._timeout,
                    name="event-router-outbox",
                    open=True,
                )
            return self._pool

    def _errors(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return _errors(self._location, doing)

    def _run(self, doing: str, work: Callable[[Conn], T]) -> T:
        """``work`` on a pooled connection; once more on a fresh one if the first was broken
        (the server restarted, or a proxy dropped an idle connection)."""
        with self._errors(doing):
            pool = self._get_pool()
            for attempt in (1, 2):
                conn: Conn | None = None
                try:
                    with pool.connection() as conn:
                        return work(conn)
                except psycopg.OperationalError:
                    if attempt == 2 or conn is None or not conn.broken:
                        raise
                    log.info("outbox_connection_lost", outbox=self.location, retrying=True)
                    pool.check()  # the other idle connections probably went the same way
        raise AssertionError("unreachable")  # pragma: no cover

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
        names = list(dict.fromkeys(destinations))  # each destination once
        if not names:
            return None  # no row would ever need it
        size = len(payload) if payload.isascii() else len(payload.encode())  # UTF-8 bytes
        params: dict[str, Any] = {
            "message_id": message_id,
            "payload": payload,
            "size": size,
            "destinations": names,
            "max_events": max_events,
            "max_bytes": max_bytes,
        }

        def store(conn: Conn) -> tuple[str, int, int] | None:
            if conn.execute(self._sql.enqueue, params).fetchone() is not None:
                return None
            return self._enqueue_counted(conn, params)

        return self._run("cannot store the event", store)

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
        """``enqueue()`` inside the caller's open transaction on ``connection`` (a psycopg 3
        connection, or a SQLAlchemy ``Connection``/``Session`` on one): the event becomes
        claimable when that transaction commits, and is gone if it rolls back.

        The insert runs in a savepoint, so a failure here leaves the caller's transaction
        usable. Admission is checked against the stored totals without locking anything (a
        lock on a counter row would be held until the app commits, stalling every other
        sender), read at most a second ago while far from the limits: transactions open at
        the same time may together pass ``max_events`` or ``max_bytes`` by the events they
        hold. Raises ``TransactionalSendError`` for a
        connection it cannot use; returns like ``enqueue()``.
        """
        conn = self._app_connection(connection)
        names = list(dict.fromkeys(destinations))
        if not names:
            return None
        size = len(payload) if payload.isascii() else len(payload.encode())
        params: dict[str, Any] = {
            "message_id": message_id,
            "payload": payload,
            "size": size,
            "destinations": names,
        }
        full = self._admits_tx(size, max_events, max_bytes)
        if full is not None:
            return full
        with (
            self._errors("cannot store the event in the caller's transaction"),
            conn.transaction(),  # a savepoint inside the caller's transaction
        ):
            conn.execute(self._sql.enqueue_in_tx, params)
        return None

    def _admits_tx(
        self, size: int, max_events: int | None, max_bytes: int | None
    ) -> tuple[str, int, int] | None:
        """The admission check of a transactional send: the stored totals, read on a
        connection of our own (no lock, nothing of the caller's transaction), at most
        ``_TX_TOTALS_S`` old while far from the limits, fresh near them."""
        if max_events is None and max_bytes is None:
            return None
        cached = self._tx_totals
        now = time.monotonic()
        if cached is None or now - cached[2] > _TX_TOTALS_S or _near(cached, max_events, max_bytes):
            row = self._run(
                "cannot read the outbox", lambda c: c.execute(self._sql.stored).fetchone()
            )
            events, stored = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
            cached = self._tx_totals = (events, stored, now)
        events, stored, _ = cached
        if max_events is not None and events + 1 > max_events:
            return ("max_events", max_events, events)
        if max_bytes is not None and stored + size > max_bytes:
            return ("max_bytes", max_bytes, stored)
        return None

    def _app_connection(self, connection: object) -> Conn:
        """The caller's psycopg connection, checked: in a transaction, on this database."""
        conn = app_connection(connection)
        status = conn.info.transaction_status
        idle = psycopg.pq.TransactionStatus.IDLE
        if status == idle and conn.autocommit:
            raise TransactionalSendError(
                "connection= is in autocommit mode with no transaction open: the event would "
                "commit on its own. Open a transaction first (psycopg: `with conn.transaction():`"
                "; Django: `with transaction.atomic():`; SQLAlchemy: `with engine.begin()`)"
            )
        if status not in (idle, psycopg.pq.TransactionStatus.INTRANS):
            raise TransactionalSendError(
                f"connection= cannot take the event: its transaction is {status.name.lower()}"
                " (a failed transaction must be rolled back first)"
            )
        with self._errors("cannot use the caller's connection"):
            # Outside the savepoint, and unable to fail: it starts the caller's transaction
            # when their driver has not yet (psycopg starts one on the first statement).
            row = conn.execute(self._sql.tx_check).fetchone()
        database, has_schema = (row[0], bool(row[1])) if row is not None else (None, False)
        if database != self._database:
            raise TransactionalSendError(
                f"connection= is to database {database!r}, but the outbox {self.location} is "
                f"in database {self._database!r}: the event must be written where the "
                "workers read"
            )
        if not has_schema:
            raise TransactionalSendError(
                f"connection= sees no outbox schema {self._schema!r} in database {database!r} "
                "(another server with a database of the same name?): run "
                "`event-router outbox migrate` against the server the app writes to"
            )
        return conn

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        s = quoted(self._schema)

        def read(conn: Conn) -> list[StoredEvent]:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                events = conn.execute(
                    f"SELECT id, message_id, payload FROM {s}.events WHERE id > %s"
                    " ORDER BY id LIMIT %s",
                    (after, limit),
                ).fetchall()
                if not events:
                    return []
                rows: dict[int, list[tuple[str, str, int, str | None, int | None]]] = {}
                for event_id, *row in conn.execute(
                    "SELECT event_id, destination, state, attempts, last_error, last_status"
                    f" FROM {s}.deliveries WHERE event_id > %s AND event_id <= %s"
                    " ORDER BY destination",
                    (after, events[-1][0]),
                ):
                    rows.setdefault(event_id, []).append(tuple(row))
            return [StoredEvent(i, m, p, tuple(rows.get(i, ()))) for i, m, p in events]

        return self._run("cannot read the outbox", read)

    def import_events(self, events: Sequence[StoredEvent]) -> int:
        """Store copies of ``events`` (from another outbox) with their rows' states and
        attempts, in one transaction, counted like any other admission; returns how many.
        Events with no rows left are skipped."""
        s = quoted(self._schema)
        wanted = [e for e in events if e.rows]

        def store(conn: Conn) -> int:
            with conn.transaction():
                for event in wanted:
                    names = [r[0] for r in event.rows]
                    size = len(event.payload.encode())
                    row = conn.execute(
                        f"INSERT INTO {s}.events (message_id, payload, size, destinations)"
                        " VALUES (%s, %s, %s, %s) RETURNING id",
                        (event.message_id, event.payload, size, names),
                    ).fetchone()
                    assert row is not None
                    with conn.cursor() as cur:
                        cur.executemany(
                            f"INSERT INTO {s}.deliveries (destination, event_id, state, attempts,"
                            " last_error, last_status) VALUES (%s, %s, %s, %s, %s, %s)",
                            [(r[0], row[0], *r[1:]) for r in event.rows],
                        )
                    conn.execute(
                        f"INSERT INTO {s}.admitted_tx (events, bytes) VALUES (1, %s)", (size,)
                    )
                conn.execute(self._sql.fold)
            return len(wanted)

        return self._run("cannot copy events in", store)

    def heartbeat(self, worker: WorkerInfo) -> None:
        """Upsert the worker's row (the database's clock marks ``last_seen``), and forget
        workers not seen for a day; folds transactional admissions into the counters too,
        so their table stays small."""
        params = {
            "id": worker.id,
            "host": worker.host,
            "pid": worker.pid,
            "destinations": list(worker.destinations),
            "delivered": worker.delivered,
            "failed": worker.failed,
            "stopped": worker.stopped,
        }

        def beat(conn: Conn) -> None:
            conn.execute(self._sql.heartbeat, params)
            conn.execute(self._sql.forget_workers)
            conn.execute(self._sql.fold)

        self._run("cannot record the worker's heartbeat", beat)

    def _enqueue_counted(self, conn: Conn, params: dict[str, Any]) -> tuple[str, int, int] | None:
        """The slow path: count exactly with every shard locked, then admit or refuse."""
        max_events, max_bytes, size = params["max_events"], params["max_bytes"], params["size"]
        with conn.transaction():
            shards = conn.execute(self._sql.lock_admitted).fetchall()
            # A statement of its own: its snapshot sees every sender the locks waited for.
            row = conn.execute(self._sql.removed_totals).fetchone()
            assert row is not None
            removed_events, removed_bytes, mine = row
            events = sum(r[1] for r in shards) - removed_events
            stored = sum(r[2] for r in shards) - removed_bytes
            if max_events is not None and events + 1 > max_events:
                return ("max_events", max_events, events)
            if max_bytes is not None and stored + size > max_bytes:
                return ("max_bytes", max_bytes, stored)
            conn.execute(self._sql.enqueue_counted, params)
            shares = {
                "share_events": _share(max_events, events + 1),
                "share_bytes": _share(max_bytes, stored + size),
            }
            conn.execute(self._sql.fold)  # every shard is locked already: before the quotas
            conn.execute(self._sql.rebalance, {**params, **shares, "mine": mine})
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
        lease = max(lease_until - now, 0.0)  # a length: the lease runs on the server's clock
        windows = {
            "schedule_window": None if schedule_horizon is None else schedule_horizon - now,
            "lease_window": None if lease_horizon is None else lease_horizon - now,
        }
        slot = {"destination": destination, "token": token, "lease": lease}

        def take(conn: Conn) -> list[ClaimedRow]:
            with conn.transaction():
                if max_in_flight is not None:
                    # Claimers of this destination count its live batches one at a time.
                    key = f"{self._schema}/{destination}"
                    conn.execute(self._sql.lock_destination, {"key": key})
                    conn.execute(self._sql.expire_claims, slot)
                    row = conn.execute(self._sql.count_claims, slot).fetchone()
                    if row is not None and row[0] >= max_in_flight:
                        return []
                candidates = conn.execute(
                    self._sql.claim, {"destination": destination, "limit": limit, **windows}
                ).fetchall()
                if not candidates:
                    return []
                taken = candidates[: plan_batch([c[3] for c in candidates], limits, batch_size)]
                ids = [c[0] for c in taken]
                conn.execute(self._sql.take, {**slot, "ids": ids})
                if max_in_flight is not None:
                    conn.execute(self._sql.add_claim, slot)
            return [ClaimedRow(*c) for c in taken]

        rows = self._run("cannot claim rows", take)
        if rows:
            with self._held_lock:
                _, held = self._held.setdefault(token, (destination, set()))
                held.update(r.event_id for r in rows)
                if max_in_flight is not None:
                    self._slots.add(token)
        return rows

    def _holding(self, token: str) -> list[int] | None:
        """The ids this process holds under ``token``, or ``None`` for a token it never used."""
        with self._held_lock:
            entry = self._held.get(token)
            return None if entry is None else list(entry[1])

    def _settled(self, token: str, event_ids: Sequence[int]) -> None:
        with self._held_lock:
            entry = self._held.get(token)
            if entry is not None:
                entry[1].difference_update(event_ids)

    def extend(self, destination: str, token: str, lease_until: float) -> None:
        lease = max(lease_until - time.time(), 0.0)  # a length, from this machine's clock
        ids = self._holding(token)
        if ids == []:
            return
        params = {"destination": destination, "token": token, "lease": lease, "ids": ids}
        sql = self._sql.extend if ids is not None else self._sql.extend_by_token
        with self._held_lock:
            slotted = token in self._slots or ids is None

        def renew(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(sql, params)
                if slotted:
                    conn.execute(self._sql.extend_claim, params)

        self._run("cannot extend the lease", renew)

    def ack(self, destination: str, token: str, event_ids: Sequence[int]) -> None:
        ids = list(event_ids)
        if not ids:
            return
        params = {"destination": destination, "token": token, "ids": ids}

        def remove(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(self._sql.lock_events, params)
                conn.execute(self._sql.ack, params)

        self._run("cannot acknowledge rows", remove)
        self._settled(token, ids)

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
        self._fail(
            self._sql.retry, destination=destination, token=token, event_ids=event_ids,
            error=error, status_code=status_code, delay=max(next_attempt_at - now, 0.0),
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
        self._fail(
            self._sql.dead, destination=destination, token=token, event_ids=event_ids,
            error=error, status_code=status_code,
        )  # fmt: skip

    def _fail(
        self,
        sql: str,
        *,
        destination: str,
        token: str,
        event_ids: Sequence[int],
        error: str,
        status_code: int | None,
        **extra: Any,
    ) -> None:
        """A failed attempt on claimed rows: count it, record the error, release the claim."""
        ids = list(event_ids)
        if not ids:
            return
        params = {
            "destination": destination,
            "token": token,
            "ids": ids,
            "error": error,
            "status": status_code,
            **extra,
        }
        self._run("cannot record the failure", lambda conn: conn.execute(sql, params))
        self._settled(token, ids)

    def release(self, destination: str, token: str) -> None:
        with self._held_lock:
            entry = self._held.pop(token, None)
            slotted = token in self._slots or entry is None
            self._slots.discard(token)
        rows_held = entry is None or bool(entry[1])
        if not rows_held and not slotted:
            return  # every row was settled: nothing is held
        params: dict[str, Any] = {"destination": destination, "token": token}
        if entry is not None:
            params["ids"] = list(entry[1])
        sql = self._sql.release if entry is not None else self._sql.release_by_token

        def hand_back(conn: Conn) -> None:
            with conn.transaction():
                if rows_held:
                    conn.execute(sql, params)
                if slotted:  # the batch no longer counts against max_in_flight
                    conn.execute(self._sql.drop_claim, params)

        self._run("cannot release rows", hand_back)

    # -- reading ------------------------------------------------------------------------------

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        counts = self._counted(self._sql.pending, destinations, up_to)
        return {d: counts.get(d, 0) for d in destinations}

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        params = {"names": list(destinations), "up_to": _bound(up_to)}
        row = self._run(
            "cannot read the outbox",
            lambda conn: conn.execute(self._sql.any_pending, params).fetchone(),
        )
        return bool(row and row[0])

    def dead_counts(self, destinations: Sequence[str]) -> dict[str, int]:
        counts = self._counted(self._sql.dead_counts, destinations, None)
        return {d: counts.get(d, 0) for d in destinations}

    def _counted(self, sql: str, destinations: Sequence[str], up_to: int | None) -> dict[str, int]:
        params = {"names": list(destinations), "up_to": _bound(up_to)}
        rows = self._run(
            "cannot read the outbox", lambda conn: conn.execute(sql, params).fetchall()
        )
        return {name: int(count) for name, count in rows}

    def high_water(self) -> int:
        row = self._run(
            "cannot read the outbox", lambda conn: conn.execute(self._sql.high_water).fetchone()
        )
        return int(row[0]) if row is not None else 0

    def stats(self, now: float) -> OutboxStats:
        """Counts per destination and state (in flight by the server's clock, not ``now``),
        the stored totals, and the dead tuples PostgreSQL counts in each outbox table."""

        def read(conn: Conn) -> OutboxStats:
            with conn.transaction():
                # One snapshot for every query: the numbers add up.
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                rows = conn.execute(self._sql.counts).fetchall()
                totals = conn.execute(self._sql.stored).fetchone()
                oldest = conn.execute(self._sql.oldest).fetchone()
                dead = conn.execute(self._sql.dead_tuples, {"schema": self._schema}).fetchall()
                workers = conn.execute(self._sql.workers).fetchall()
            counts: dict[str, dict[str, int]] = {}
            for destination, state, count in sorted(rows):
                counts.setdefault(destination, {})[state] = int(count)
            events, stored = totals if totals is not None else (0, 0)
            return OutboxStats(
                counts=counts,
                events=int(events or 0),
                bytes=int(stored or 0),
                oldest_pending=float(oldest[0]) if oldest is not None else None,
                dead_tuples={name: int(n) for name, n in dead},
                workers=tuple(
                    WorkerInfo(
                        id=w[0],
                        host=w[1],
                        pid=int(w[2]),
                        destinations=tuple(w[3]),
                        started=float(w[4]),
                        last_seen=float(w[5]),
                        delivered=int(w[6]),
                        failed=int(w[7]),
                        stopped=bool(w[8]),
                    )
                    for w in workers
                ),
            )

        return self._run("cannot read the outbox", read)

    # -- maintenance --------------------------------------------------------------------------

    def replay(self, destination: str | None, now: float) -> int:
        params = {"destination": destination, "limit": _CHUNK}
        moved = 0
        while True:
            count = self._run(
                "cannot replay dead letters",
                lambda conn: conn.execute(self._sql.replay, params).rowcount,
            )
            moved += count
            if count < _CHUNK:
                return moved

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        params: dict[str, Any] = {
            "dead_only": dead_only,
            "destination": destination,
            "limit": _CHUNK,
        }

        def chunk(conn: Conn) -> int | None:
            with conn.transaction():
                ids = [r[0] for r in conn.execute(self._sql.purge_lock, params).fetchall()]
                if not ids:
                    return None
                row = conn.execute(self._sql.purge, {**params, "ids": ids}).fetchone()
            return int(row[0]) if row is not None else 0

        removed = 0
        while (count := self._run("cannot purge", chunk)) is not None:
            removed += count
        return removed

    # -- lifecycle ----------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Nothing to do: autovacuum keeps the tables (``outbox status`` shows dead tuples)."""

    def trim(self) -> None:
        """Nothing to do: VACUUM reuses the space of deleted rows."""

    def before_fork(self) -> None:
        """Hold the lock under which the pool is opened and closed, so that the child never
        inherits a pool half made. Operations do not hold it (each checks a connection out of
        the pool), and the child never uses the parent's pool, so a fork mid-operation is
        safe."""
        self._fork_locks.hold(self._lock)

    def after_fork_in_parent(self) -> None:
        self._fork_locks.release()

    def after_fork_in_child(self) -> None:
        # The pool's sockets and threads belong to the parent: leave them alone.
        self._fork_locks.forget()
        self._lock = threading.Lock()
        self._held_lock = threading.Lock()
        self._held = {}
        self._slots = set()
        if self._pool is not None:
            _abandoned.append(self._pool)
        self._pool = None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __repr__(self) -> str:
        return f"PostgresOutbox({self.location!r})"


def migrate_schema(url: str, schema: str = DEFAULT_SCHEMA) -> tuple[str, MigrationResult]:
    """Create the outbox in ``schema`` at ``url``, or upgrade it to this event-router's
    version (what ``event-router outbox migrate`` runs). Returns the outbox's location (the
    URL with its password masked) and what was done."""
    location = _location(url, schema)
    with _errors(location, "cannot migrate"), _connect(url) as conn:
        return location, migrate(conn, schema, location)


def _location(url: str, schema: str) -> str:
    """Check ``schema``, register the password as a secret, and name the outbox for messages."""
    quoted(schema)  # a bad name fails here, before any connection
    for secret in _secrets_of(url):
        register_secret(secret)
    return f"{mask_url(url)} (schema {schema})"


def _connect(url: str) -> Conn:
    return psycopg.connect(url, **_connection_options(url))


def _connection_options(url: str) -> dict[str, Any]:
    options: dict[str, Any] = {"autocommit": True, "connect_timeout": _CONNECT_TIMEOUT_S}
    # Named in pg_stat_activity, unless the URL names its connections itself.
    if "application_name" not in psycopg.conninfo.conninfo_to_dict(url):
        options["application_name"] = _APPLICATION_NAME
    return options


@contextlib.contextmanager
def _errors(location: str, doing: str) -> Iterator[None]:
    """psycopg's errors as ``PostgresOutboxError`` naming the outbox (password masked)."""
    try:
        yield
    except psycopg.Error as exc:
        # The first line: the server's own message (the rest quotes our SQL back).
        message = redact(str(exc).strip().partition("\n")[0]) or type(exc).__name__
        raise PostgresOutboxError(f"the outbox {location}: {doing}: {message}") from exc


def _near(totals: tuple[int, int, float], max_events: int | None, max_bytes: int | None) -> bool:
    """Whether cached totals are within a tenth of a limit: read them fresh then."""
    events, stored, _ = totals
    return (max_events is not None and events * 10 >= max_events * 9) or (
        max_bytes is not None and stored * 10 >= max_bytes * 9
    )


def _share(limit: int | None, used: int) -> int | None:
    """Each shard's part of the room left under ``limit`` (``None``: no limit)."""
    return None if limit is None else (limit - used) // SHARDS


def _bound(up_to: int | None) -> int:
    return up_to if up_to is not None else (1 << 62)


def _secrets_of(url: str) -> list[str]:
    password = password_of(url)
    if not password:
        return []
    raw = url.partition("://")[2]
    # As written in the URL too (percent-encoded), in case a message quotes the URL.
    encoded = raw.partition("@")[0].partition(":")[2] if "@" in raw else ""
    return [p for p in {password, encoded} if p]
