"""The PostgreSQL outbox's tables, their version, and ``event-router outbox migrate``.

Everything lives in one schema (``[queue] schema``, default ``event_router``); its
``schema_version`` table holds the one version number. Creating and upgrading run in one
transaction under ``pg_advisory_xact_lock``, so two processes migrating at once are safe: the
second waits, then finds the work done. A router refuses a schema of any other version than
``SCHEMA_VERSION``; it creates a missing schema itself (as the SQLite outbox creates its file),
so only upgrades need ``event-router outbox migrate``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import psycopg

from router_core.errors import RouterError
from router_core.logs import get_logger
from router_core.settings.queue import SCHEMA_NAME

__all__ = [
    "SCHEMA_VERSION",
    "SHARDS",
    "MigrationResult",
    "SchemaMissingError",
    "SchemaVersionError",
    "check_schema",
    "migrate",
    "quoted",
    "schema_version",
]

log = get_logger("event_router.outbox")

SCHEMA_VERSION = 2

SHARDS = 16
"""Rows of the ``admitted`` and ``removed`` counters (see ``backend.py``): enough that
connections rarely share one, few enough that summing them stays trivial."""

# Tables that churn (rows inserted, then deleted within seconds): vacuum after 1% of them is
# dead rather than PostgreSQL's default 20%, so a large table does not bloat before its first
# vacuum. deliveries keeps half of each page free: a claim updates a whole batch of rows at
# once, and the new row versions (now with a token) are HOT updates, written with no index
# entry, only where they fit on the page beside the old ones. The rows live seconds.
_CHURN = "autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000"

_VERSION_1 = [
    """CREATE TABLE {s}.events (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id text NOT NULL,
        payload text NOT NULL,
        size integer NOT NULL,
        destinations text[] NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now()
    ) WITH ({churn})""",
    """CREATE TABLE {s}.deliveries (
        destination text NOT NULL,
        event_id bigint NOT NULL,
        state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
        attempts integer NOT NULL DEFAULT 0,
        next_attempt_at timestamptz NOT NULL DEFAULT now(),
        since timestamptz NOT NULL DEFAULT now(),
        claim_token text,
        claimed_until timestamptz,
        last_error text,
        last_status integer,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (destination, event_id)
    ) WITH (fillfactor = 50, {churn})""",
    # The claim walks one destination's pending rows in event order; dead rows are not in it.
    "CREATE INDEX deliveries_due ON {s}.deliveries (destination, event_id) WHERE state = 'pending'",
    """CREATE TABLE {s}.admitted (
        shard smallint PRIMARY KEY,
        events bigint NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0,
        limit_events bigint,
        limit_bytes bigint,
        quota_events bigint,
        quota_bytes bigint
    ) WITH (fillfactor = 10)""",
    f"INSERT INTO {{s}}.admitted (shard) SELECT generate_series(0, {SHARDS - 1})",
    """CREATE TABLE {s}.removed (
        slot smallint PRIMARY KEY,
        events bigint NOT NULL DEFAULT 0,
        bytes bigint NOT NULL DEFAULT 0
    ) WITH (fillfactor = 10)""",
    f"INSERT INTO {{s}}.removed (slot) SELECT generate_series(0, {SHARDS - 1})",
    """CREATE TABLE {s}.schema_version (
        version integer NOT NULL,
        migrated_at timestamptz NOT NULL DEFAULT now()
    )""",
    "INSERT INTO {s}.schema_version (version) VALUES (1)",
]

# Version 2: many workers on many machines, and events written in the app's transaction.
_VERSION_2 = [
    # One row per batch in flight to a destination with max_in_flight: counted under an
    # advisory lock when claiming, deleted when the batch is done, ignored once expired.
    """CREATE TABLE IF NOT EXISTS {s}.claims (
        destination text NOT NULL,
        token text NOT NULL,
        claimed_until timestamptz NOT NULL,
        PRIMARY KEY (destination, token)
    ) WITH ({churn})""",
    # Admissions written inside an app's transaction (send(connection=...)): an insert of its
    # own rather than an update of a shared counter row, so no lock is held until the app
    # commits. A rollback takes the row away with the event. Folded into admitted now and then.
    """CREATE TABLE IF NOT EXISTS {s}.admitted_tx (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        events bigint NOT NULL,
        bytes bigint NOT NULL
    ) WITH ({churn})""",
    # Heartbeats of `event-router worker` processes, shown by `event-router outbox status`.
    """CREATE TABLE IF NOT EXISTS {s}.workers (
        id text PRIMARY KEY,
        host text NOT NULL,
        pid integer NOT NULL,
        destinations text[] NOT NULL,
        started_at timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now(),
        delivered bigint NOT NULL DEFAULT 0,
        failed bigint NOT NULL DEFAULT 0,
        stopped boolean NOT NULL DEFAULT false
    )""",
]

# UPGRADES[n]: the statements that take a schema from version n to n + 1.
UPGRADES: dict[int, list[str]] = {1: _VERSION_2}

_OUR_TABLES = ("events", "deliveries", "admitted", "removed", "claims", "admitted_tx", "workers")


class SchemaVersionError(RouterError):
    """The outbox schema has a version this event-router does not use."""


class SchemaMissingError(SchemaVersionError):
    """There is no outbox in the schema (and it was not to be created)."""


@dataclass(frozen=True, slots=True)
class MigrationResult:
    """What ``migrate()`` found and left: ``previous`` is ``None`` when it created the schema."""

    schema: str
    previous: int | None
    version: int

    @property
    def changed(self) -> bool:
        return self.previous != self.version

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "previous_version": self.previous,
            "version": self.version,
            "changed": self.changed,
        }


def quoted(schema: str) -> str:
    """``schema`` as an SQL identifier (checked: lowercase letters, digits, ``_``)."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(f"invalid outbox schema name {schema!r}: use lowercase a-z, 0-9 and _")
    return f'"{schema}"'


def _lock_key(schema: str) -> int:
    """The advisory lock that serialises migrations of one schema (stable across versions)."""
    digest = hashlib.blake2b(f"event-router outbox {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def schema_version(conn: psycopg.Connection[Any], schema: str) -> int | None:
    """The schema's version, or ``None`` when it holds no outbox."""
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL", (f"{quoted(schema)}.schema_version",)
    ).fetchone()
    if row is None or not row[0]:
        return None
    found = conn.execute(f"SELECT max(version) FROM {quoted(schema)}.schema_version").fetchone()
    return int(found[0]) if found is not None and found[0] is not None else 0


def migrate(conn: psycopg.Connection[Any], schema: str, location: str) -> MigrationResult:
    """Create the outbox in ``schema``, or upgrade it to ``SCHEMA_VERSION``; idempotent.

    ``conn`` must be in autocommit mode (the work is one transaction of its own).
    """
    s = quoted(schema)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key(schema),))
        previous = schema_version(conn, schema)
        if previous is not None and previous > SCHEMA_VERSION:
            raise _newer(schema, previous, location)
        if previous is None:
            _refuse_foreign_tables(conn, schema, location)
            try:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}")
                _run(conn, _VERSION_1, s)
                for version in range(1, SCHEMA_VERSION):
                    _run(conn, UPGRADES[version], s)
                conn.execute(f"UPDATE {s}.schema_version SET version = %s", (SCHEMA_VERSION,))
            except psycopg.errors.InsufficientPrivilege as exc:
                reason = str(exc).strip().partition("\n")[0]
                raise SchemaMissingError(
                    f"there is no outbox in schema {schema!r} at {location}, and this database "
                    f"user may not create it ({reason}): run "
                    "`event-router outbox migrate` as a user who may, then grant this one USAGE "
                    "on the schema and SELECT, INSERT, UPDATE, DELETE on its tables"
                ) from None
        else:
            for version in range(previous, SCHEMA_VERSION):
                steps = UPGRADES.get(version)
                if steps is None:
                    raise SchemaVersionError(
                        f"the outbox schema {schema!r} at {location} has version {version}, "
                        f"which this event-router cannot upgrade to version {SCHEMA_VERSION}"
                    )
                _run(conn, steps, s)
            if previous != SCHEMA_VERSION:
                conn.execute(
                    f"UPDATE {s}.schema_version SET version = %s, migrated_at = now()",
                    (SCHEMA_VERSION,),
                )
    result = MigrationResult(schema=schema, previous=previous, version=SCHEMA_VERSION)
    if result.changed:
        log.info(
            "outbox_schema_migrated",
            outbox=location,
            previous_version=previous,
            version=SCHEMA_VERSION,
        )
    return result


def check_schema(
    conn: psycopg.Connection[Any], schema: str, location: str, *, create: bool
) -> MigrationResult | None:
    """Make sure ``schema`` holds an outbox of ``SCHEMA_VERSION``.

    A missing outbox is created when ``create`` (the result says so), else refused; any other
    version is refused with ``SchemaVersionError`` saying what to run.
    """
    version = schema_version(conn, schema)
    if version == SCHEMA_VERSION:
        return None
    if version is None:
        if create:
            return migrate(conn, schema, location)
        raise SchemaMissingError(
            f"there is no outbox in schema {schema!r} at {location}: "
            "run `event-router outbox migrate` to create it"
        )
    if version > SCHEMA_VERSION:
        raise _newer(schema, version, location)
    raise SchemaVersionError(
        f"the outbox schema {schema!r} at {location} has version {version}, older than "
        f"version {SCHEMA_VERSION} that this event-router uses: run `event-router outbox "
        "migrate` (with this [queue] config) to upgrade it"
    )


def _newer(schema: str, version: int, location: str) -> SchemaVersionError:
    return SchemaVersionError(
        f"the outbox schema {schema!r} at {location} has version {version}, newer than "
        f"version {SCHEMA_VERSION} that this event-router understands: upgrade event-router "
        "(`event-router outbox migrate` never downgrades), or set [queue] schema to another "
        "schema"
    )


def _refuse_foreign_tables(conn: psycopg.Connection[Any], schema: str, location: str) -> None:
    found = conn.execute(
        "SELECT array_agg(table_name::text ORDER BY table_name) FROM information_schema.tables"
        " WHERE table_schema = %s AND table_name = ANY(%s)",
        (schema, list(_OUR_TABLES)),
    ).fetchone()
    clashing = found[0] if found is not None else None
    if clashing:
        raise SchemaVersionError(
            f"schema {schema!r} at {location} already has table(s) {', '.join(clashing)} but "
            "no outbox schema_version: it is not an event-router outbox; set [queue] schema "
            "to another schema"
        )


def _run(conn: psycopg.Connection[Any], statements: list[str], s: str) -> None:
    for statement in statements:
        conn.execute(statement.format(s=s, churn=_CHURN))
