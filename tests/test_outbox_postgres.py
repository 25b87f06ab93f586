"""The PostgreSQL outbox against a real server (tests/postgres.py): what SQLite cannot show.

The shared contract suite runs against PostgreSQL too (tests/test_outbox_store.py); these are
the guarantees that only matter, or only can be shown, with a server: leases on the server's
clock, concurrent claimers, exact backpressure with many senders, schema versions and
migrations, the password kept out of sight, dead tuples, fork, a lost connection.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from router_core import (
    ConfigError,
    Delivery,
    DeliveryError,
    Destination,
    Event,
    PluginRegistry,
    Router,
    RouterConfig,
    RouterError,
    hookimpl,
)
from router_core.cli.errors import RouterGroup
from router_core.cli.outbox import outbox as outbox_command
from router_core.limits import BatchLimits
from router_core.outbox import QueueSettings, open_outbox
from router_core.outbox.postgres import (
    SCHEMA_VERSION,
    PostgresOutbox,
    PostgresOutboxError,
    SchemaMissingError,
    SchemaVersionError,
)
from router_core.outbox.store import ClaimedRow
from router_core.sandbox import SegmentEmulator
from router_core.secrets import MASK, redact

LIMITS = BatchLimits(max_events=1000, max_request_bytes=5_000_000, max_event_bytes=32_000)
CLI = RouterGroup(name="event-router", commands=[outbox_command])
WAIT = 60.0  # a generous bound on every wait for a condition; tests finish far sooner
SECRET = "s3cret-Pa55-word"


def put(store: PostgresOutbox, n: int, destinations: Sequence[str] = ("a",), **kw: Any) -> int:
    """Store ``n`` events; how many were accepted."""
    accepted = 0
    for _ in range(n):
        message_id = uuid.uuid4().hex
        payload = json.dumps({"type": "track", "event": "E", "message_id": message_id})
        full = store.enqueue(
            message_id,
            payload,
            destinations,
            now=time.time(),
            max_events=kw.get("max_events"),
            max_bytes=kw.get("max_bytes"),
        )
        accepted += full is None
    return accepted


def claim(store: PostgresOutbox, token: str, destination: str = "a", **kw: Any) -> list[ClaimedRow]:
    now = kw.get("now", time.time())
    return store.claim(
        destination,
        limits=LIMITS,
        batch_size=kw.get("batch_size", 100),
        token=token,
        now=now,
        lease_until=now + kw.get("lease", 30.0),
    )


def sql(url: str, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def wait_for(condition: Any, what: str) -> Any:
    """Poll ``condition`` until it returns something truthy (a bound, not a timing claim)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def with_password(url: str) -> tuple[str, str]:
    """``url`` with a password, and the password (trust auth ignores a made-up one)."""
    from router_core.dburl import password_of

    existing = password_of(url)
    if existing:
        return url, existing
    scheme, _, rest = url.partition("://")
    user, at, host = rest.partition("@")
    if not at:
        user, host = "postgres", rest
    return f"{scheme}://{user}:{SECRET}@{host}", SECRET


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(CLI, ["outbox", *args], catch_exceptions=False, env=env)


def write_config(tmp_path: Path, url: str, schema: str, destinations: str = "") -> Path:
    path = tmp_path / "router.toml"
    path.write_text(
        f'[queue]\nurl = "{url}"\nschema = "{schema}"\nflush_interval = 0.01\n'
        f"retry = {{ max_attempts = 1 }}\n{destinations}",
        encoding="utf-8",
    )
    return path


# -- settings (no server needed) ------------------------------------------------------------


def test_the_url_scheme_selects_the_backend() -> None:
    sqlite = QueueSettings.coerce({"url": "sqlite:///var/outbox.db"})
    assert sqlite is not None
    assert (sqlite.backend, sqlite.path) == ("sqlite", Path("var/outbox.db"))
    for url in ("postgresql://app@db/prod", "postgres://app@db/prod"):
        settings = QueueSettings.coerce({"url": url, "schema": "analytics_outbox"})
        assert settings is not None
        assert (settings.backend, settings.schema_name) == ("postgres", "analytics_outbox")
    default = QueueSettings.coerce({"url": "postgresql://db/prod"})
    assert default is not None
    assert default.schema_name == "event_router"
    with pytest.raises(ConfigError, match=r"queue\.url: must be a database URL starting with"):
        QueueSettings.coerce({"url": "mysql://db/prod"})
    with pytest.raises(ConfigError, match='backend = "memory" contradicts url'):
        QueueSettings.coerce({"url": "postgresql://db/prod", "backend": "memory"})
    with pytest.raises(ConfigError, match='backend = "postgres" needs url'):
        QueueSettings.coerce({"backend": "postgres"})
    with pytest.raises(ConfigError, match="path is the SQLite file"):
        QueueSettings.coerce({"url": "postgresql://db/prod", "path": "x.db"})


@pytest.mark.parametrize("name", ["Event_Router", "1st", "has-dash", "x" * 64, ""])
def test_the_schema_must_be_a_lowercase_sql_name(name: str) -> None:
    with pytest.raises(ConfigError, match=r"queue\.schema: must be a lowercase SQL name"):
        QueueSettings.coerce({"url": "postgresql://db/prod", "schema": name})


def test_queue_keys_take_variables_from_the_environment() -> None:
    config = RouterConfig.from_dict(
        {"queue": {"url": "${OUTBOX_URL}", "schema": "${OUTBOX_SCHEMA:-event_router}"}}
    )
    settings = config.queue_settings({"OUTBOX_URL": f"postgresql://app:{SECRET}@db/prod"})
    assert settings is not None
    assert settings.backend == "postgres"
    assert settings.url is not None
    assert settings.url.get_secret_value() == f"postgresql://app:{SECRET}@db/prod"
    assert settings.schema_name == "event_router"
    unset = r"queue\.url: environment variable OUTBOX_URL is not set"
    with pytest.raises(ConfigError, match=unset):
        config.queue_settings({})
    # A table without variables is still checked when the file is read.
    with pytest.raises(ConfigError, match=r"queue\.batch_size"):
        RouterConfig.from_dict({"queue": {"batch_size": 0}})


def test_settings_show_the_url_with_its_password_masked() -> None:
    settings = QueueSettings.coerce({"url": f"postgresql://app:{SECRET}@db:5432/prod"})
    assert settings is not None
    for shown in (repr(settings), str(settings.url), settings.model_dump_json()):
        assert SECRET not in shown
    assert f"postgresql://app:{MASK}@db:5432/prod" in repr(settings)


def test_without_psycopg_opening_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("router_core.outbox.postgres")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what a missing package looks like
    settings = QueueSettings(url="postgresql://db/prod")
    with pytest.raises(ConfigError, match=r"pip install 'event-router\[postgres\]'"):
        open_outbox(settings)


# -- end to end -----------------------------------------------------------------------------


class Recorder:
    """An in-process plugin with ``send_batch``: records what each destination received.

    Destinations whose name starts with ``flaky`` fail every other request with a 503.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: dict[str, list[str]] = {}
        self.requests: Counter[str] = Counter()

    @hookimpl
    def send_batch(self, destination: Destination[Any], events: Sequence[Event]) -> Delivery:
        with self.lock:
            self.requests[destination.name] += 1
            if destination.name.startswith("flaky") and self.requests[destination.name] % 2:
                raise DeliveryError("HTTP 503", status_code=503, retryable=True)
            self.received.setdefault(destination.name, []).extend(e.message_id for e in events)
        return Delivery(status_code=200)

    @hookimpl
    def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        return self.send_batch(destination, [event])


def recorder_registry() -> tuple[Recorder, PluginRegistry]:
    plugin = Recorder()
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "recorder")
    return plugin, registry


def test_a_queued_router_delivers_through_postgres(postgres_url: str, pg_schema: str) -> None:
    plugin, registry = recorder_registry()
    queue = {
        "url": postgres_url,
        "schema": pg_schema,
        "batch_size": 25,
        "flush_interval": 0.01,
        "retry": {"backoff_base": 0.01, "backoff_max": 0.05},
    }
    tables = {"steady": {"plugin": "recorder"}, "flaky": {"plugin": "recorder"}}
    with Router(tables, plugins=registry, queue=queue) as router:
        assert router.outbox is not None
        assert isinstance(router.outbox, PostgresOutbox)
        sent = [router.send(Event.track("E", user_id=f"u{i}")).message_id for i in range(120)]
        result = router.flush(timeout=WAIT)
        stats = router.outbox.stats(time.time())
    assert result.complete
    assert result.dead == {"steady": 0, "flaky": 0}
    # Each destination got every event exactly once, the failing one after its retries.
    assert Counter(plugin.received["steady"]) == Counter(sent)
    assert Counter(plugin.received["flaky"]) == Counter(sent)
    assert (stats.events, stats.bytes, stats.counts) == (0, 0, {})
    assert sql(postgres_url, f'SELECT count(*) FROM "{pg_schema}".events') == [(0,)]


def test_a_config_file_names_the_server_through_a_variable(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    plugin, registry = recorder_registry()
    path = tmp_path / "router.toml"
    path.write_text(
        f'[queue]\nurl = "${{OUTBOX_URL}}"\nschema = "{pg_schema}"\nflush_interval = 0.01\n'
        '[destinations.hook]\nplugin = "recorder"\n',
        encoding="utf-8",
    )
    env = {"OUTBOX_URL": postgres_url}
    with Router.from_config(path, plugins=registry, env=env) as router:
        sent = router.send(Event.track("E", user_id="u1")).message_id
        assert router.flush(timeout=WAIT).complete
    assert plugin.received == {"hook": [sent]}


# -- leases and claims ----------------------------------------------------------------------


def test_an_expired_lease_cannot_ack_or_fail_rows_another_worker_holds(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 3)
    late = claim(pg_outbox, "late", lease=0.2)
    ids = [r.event_id for r in late]
    # Once the server's clock passes the lease, another worker takes the rows.
    taken = wait_for(lambda: claim(pg_outbox, "current"), "the lease to run out")
    assert [r.event_id for r in taken] == ids
    # The first worker comes back with its outcome: nothing it does touches the rows.
    pg_outbox.ack("a", "late", ids)
    pg_outbox.retry(
        "a", "late", ids, next_attempt_at=time.time() + 60, error="503", status_code=503,
        now=time.time(),
    )  # fmt: skip
    pg_outbox.dead("a", "late", ids, error="400", status_code=400, now=time.time())
    pg_outbox.extend("a", "late", time.time() + 3600)
    pg_outbox.release("a", "late")
    rows = sql(
        postgres_url,
        f"SELECT claim_token, state, attempts, last_error, claimed_until > now() + interval"
        f" '1 minute' FROM \"{pg_schema}\".deliveries ORDER BY event_id",
    )
    assert rows == [("current", "pending", 0, None, False)] * 3
    # The current holder still can.
    pg_outbox.ack("a", "current", ids)
    assert pg_outbox.stats(time.time()).events == 0


def test_leases_run_on_the_database_clock_not_the_callers(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 2)
    skewed = time.time() + 3600  # this worker's clock is an hour ahead of the others'
    assert len(claim(pg_outbox, "skewed", now=skewed, lease=30)) == 2
    # A worker whose clock is two hours ahead would think the lease long gone: not so.
    assert claim(pg_outbox, "further", now=skewed + 3600) == []
    ((left,),) = sql(
        postgres_url,
        f'SELECT extract(epoch FROM max(claimed_until) - now()) FROM "{pg_schema}".deliveries',
    )
    assert 0 < left <= 30  # the lease's length, counted from the server's now()


def test_a_claim_skips_rows_another_transaction_has_locked(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 6)
    with psycopg.connect(postgres_url) as other, other.transaction():
        other.execute(
            f'SELECT 1 FROM "{pg_schema}".deliveries WHERE event_id <= 2 FOR UPDATE'
        )  # another worker in the middle of its claim
        rows = claim(pg_outbox, "t")  # returns at once rather than waiting for the lock
    assert [r.event_id for r in rows] == [3, 4, 5, 6]


def test_the_claim_walks_the_due_index_in_order(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    from router_core.outbox.postgres.backend import _Sql

    s = f'"{pg_schema}"'
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {s}.events (message_id, payload, size, destinations)"
            " SELECT 'm' || g, '{}', 2, ARRAY['a'] FROM generate_series(1, 20000) AS g"
        )
        conn.execute(
            f"INSERT INTO {s}.deliveries (destination, event_id) SELECT 'a', id FROM {s}.events"
        )
        conn.execute(f"UPDATE {s}.deliveries SET state = 'dead' WHERE event_id <= 15000")
        conn.execute(f"VACUUM ANALYZE {s}.deliveries, {s}.events")
        ((plan,),) = conn.execute(
            "EXPLAIN (FORMAT JSON) " + _Sql(pg_schema).claim,
            {"destination": "a", "limit": 100, "schedule_window": 305.0, "lease_window": 65.0},
        ).fetchall()

    def nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        yield node
        for child in node.get("Plans", []):
            yield from nodes(child)

    on_deliveries = [n for n in nodes(plan[0]["Plan"]) if n.get("Relation Name") == "deliveries"]
    # Pending rows in event order straight from the partial index (dead letters are not in
    # it): no pass over the table and no sort, however many dead letters there are.
    assert [(n["Node Type"], n.get("Index Name")) for n in on_deliveries] == [
        ("Index Scan", "deliveries_due")
    ]
    limit = next(n for n in nodes(plan[0]["Plan"]) if n["Node Type"] == "Limit")
    assert "Sort" not in {n["Node Type"] for n in nodes(limit)}


def test_concurrent_claimers_never_share_a_row(
    postgres_url: str, pg_schema: str, pg_outbox: PostgresOutbox
) -> None:
    total = 400
    put(pg_outbox, total)
    outboxes = [PostgresOutbox(postgres_url, schema=pg_schema) for _ in range(2)]
    claimed: list[list[int]] = [[] for _ in range(6)]
    start = threading.Barrier(len(claimed))

    def worker(n: int) -> None:
        store = outboxes[n % 2]
        start.wait()
        while rows := claim(store, f"w{n}-{len(claimed[n])}", batch_size=7):
            claimed[n].extend(r.event_id for r in rows)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(len(claimed))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    finally:
        for store in outboxes:
            store.close()
    every = [event_id for ids in claimed for event_id in ids]
    assert sorted(every) == list(range(1, total + 1))  # each row once, none missed
    assert sum(1 for ids in claimed if ids) > 1  # the claimers did run side by side


def test_the_last_two_destinations_acknowledging_at_once_remove_the_event(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 300, destinations=("a", "b"))
    other = PostgresOutbox(postgres_url, schema=pg_schema)
    try:
        rows = {d: claim(store, f"t{d}", d, batch_size=300) for d, store in
                (("a", pg_outbox), ("b", other))}  # fmt: skip
        start = threading.Barrier(2)

        def ack(destination: str, store: PostgresOutbox) -> None:
            start.wait()
            for row in rows[destination]:  # one by one: every event races
                store.ack(destination, f"t{destination}", [row.event_id])

        threads = [
            threading.Thread(target=ack, args=("a", pg_outbox)),
            threading.Thread(target=ack, args=("b", other)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
    finally:
        other.close()
    assert sql(postgres_url, f'SELECT count(*) FROM "{pg_schema}".events') == [(0,)]
    stats = pg_outbox.stats(time.time())
    assert (stats.events, stats.bytes) == (0, 0)


# -- backpressure ---------------------------------------------------------------------------


def stored(url: str, schema: str) -> tuple[int, int]:
    ((count, size),) = sql(url, f'SELECT count(*), coalesce(sum(size), 0) FROM "{schema}".events')
    return int(count), int(size)


def test_max_events_is_exact_with_many_senders(
    postgres_url: str, pg_schema: str, pg_outbox: PostgresOutbox
) -> None:
    senders = [PostgresOutbox(postgres_url, schema=pg_schema, pool_size=2) for _ in range(4)]
    accepted = [0] * 8
    start = threading.Barrier(len(accepted))

    def send(n: int) -> None:
        start.wait()
        accepted[n] = put(senders[n % 4], 20, max_events=50)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(len(accepted))]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT)
        assert sum(accepted) == 50
        assert stored(postgres_url, pg_schema)[0] == 50
        assert senders[0].enqueue("x", "{}", ["a"], now=0, max_events=50, max_bytes=None) == (
            "max_events",
            50,
            50,
        )
        # Delivering ten makes room for exactly ten more.
        rows = claim(pg_outbox, "t", batch_size=10)
        pg_outbox.ack("a", "t", [r.event_id for r in rows])
        assert put(senders[1], 15, max_events=50) == 10
    finally:
        for store in senders:
            store.close()
    stats = pg_outbox.stats(time.time())
    assert (stats.events, stats.bytes) == stored(postgres_url, pg_schema)
    assert stats.events == 50


def test_max_bytes_is_exact(pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str) -> None:
    payload = '{"type":"track","event":"Ünïcode"}'  # sizes are UTF-8 bytes, not characters
    size = len(payload.encode())
    limit = 7 * size + size - 1
    results = [
        pg_outbox.enqueue(f"m{i}", payload, ["a"], now=0, max_events=None, max_bytes=limit)
        for i in range(9)
    ]
    assert results[:7] == [None] * 7
    assert results[7:] == [("max_bytes", limit, 7 * size)] * 2
    assert stored(postgres_url, pg_schema) == (7, 7 * size)


def test_the_counters_agree_with_the_rows(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 40, destinations=("a", "b", "c"), max_events=1000, max_bytes=10**9)
    rows = claim(pg_outbox, "t", "a", batch_size=25)
    pg_outbox.ack("a", "t", [r.event_id for r in rows])
    rows = claim(pg_outbox, "u", "b", batch_size=10)
    pg_outbox.dead("b", "u", [r.event_id for r in rows], error="400", status_code=400, now=0)
    pg_outbox.purge(dead_only=False, destination="c")
    pg_outbox.purge(dead_only=True, destination=None)
    stats = pg_outbox.stats(time.time())
    assert (stats.events, stats.bytes) == stored(postgres_url, pg_schema)
    # a still needs events 26-40, b events 11-40 (its 10 dead were purged); c needs none.
    assert stats.counts == {"a": {"pending": 15}, "b": {"pending": 30}}
    assert stats.events == 30


# -- schema versions and migrations ---------------------------------------------------------


def set_version(url: str, schema: str, version: int) -> None:
    sql(url, f'UPDATE "{schema}".schema_version SET version = %s', (version,))


@pytest.mark.parametrize(
    ("version", "advice"),
    [(SCHEMA_VERSION + 1, "upgrade event-router"), (SCHEMA_VERSION - 1, "outbox migrate")],
)
def test_a_schema_of_another_version_is_refused(
    postgres_url: str, pg_schema: str, tmp_path: Path, version: int, advice: str
) -> None:
    PostgresOutbox(postgres_url, schema=pg_schema).close()
    set_version(postgres_url, pg_schema, version)
    with pytest.raises(SchemaVersionError) as raised:
        PostgresOutbox(postgres_url, schema=pg_schema)
    message = str(raised.value)
    assert f"schema {pg_schema!r}" in message
    assert f"version {version}" in message
    assert f"version {SCHEMA_VERSION}" in message
    assert "event-router outbox migrate" in message
    assert advice in message
    with pytest.raises(RouterError, match="has version"):
        Router({}, queue={"url": postgres_url, "schema": pg_schema})
    config = write_config(tmp_path, postgres_url, pg_schema)
    status = CliRunner().invoke(CLI, ["outbox", "status", "-c", str(config)])
    assert status.exit_code == 2
    assert "event-router outbox migrate" in status.output


def test_a_missing_schema_is_created_unless_told_not_to(postgres_url: str, pg_schema: str) -> None:
    with pytest.raises(SchemaMissingError, match="run `event-router outbox migrate`"):
        PostgresOutbox(postgres_url, schema=pg_schema, create=False)
    created = PostgresOutbox(postgres_url, schema=pg_schema)
    created.close()
    assert created.created is not None
    assert created.created.previous is None
    again = PostgresOutbox(postgres_url, schema=pg_schema, create=False)
    again.close()
    assert again.created is None


@pytest.fixture
def app_user_url(postgres_url: str) -> Iterator[str]:
    """The URL of a new database user with no privilege beyond logging in."""
    name = f"er_test_app_{uuid.uuid4().hex[:8]}"
    try:
        sql(postgres_url, f"CREATE ROLE {name} LOGIN PASSWORD '{SECRET}'")
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip(f"the user of {postgres_url} may not create roles")
    scheme, _, rest = postgres_url.partition("://")
    yield f"{scheme}://{name}:{SECRET}@{rest.rpartition('@')[2]}"
    sql(postgres_url, f"DROP OWNED BY {name}")
    sql(postgres_url, f"DROP ROLE {name}")


def test_an_app_user_without_create_is_told_to_migrate_then_works_with_grants(
    postgres_url: str, pg_schema: str, app_user_url: str
) -> None:
    with pytest.raises(SchemaMissingError) as refused:
        PostgresOutbox(app_user_url, schema=pg_schema)
    assert "may not create it" in str(refused.value)
    assert "event-router outbox migrate" in str(refused.value)
    from router_core.outbox.postgres import migrate_schema

    migrate_schema(postgres_url, pg_schema)
    user = app_user_url.partition("://")[2].partition(":")[0]
    sql(postgres_url, f'GRANT USAGE ON SCHEMA "{pg_schema}" TO {user}')
    sql(
        postgres_url,
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{pg_schema}" TO {user}',
    )
    store = PostgresOutbox(app_user_url, schema=pg_schema)
    try:
        assert put(store, 3, max_events=10) == 3
        rows = claim(store, "t")
        store.ack("a", "t", [r.event_id for r in rows])
        assert store.stats(time.time()).events == 0
    finally:
        store.close()


def test_migrate_creates_the_schema_and_is_idempotent(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, "${OUTBOX_URL}", pg_schema)
    env = {"OUTBOX_URL": postgres_url}
    first = cli("migrate", "-c", str(config), "--json", env=env)
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout) == {
        "outbox": f"{postgres_url} (schema {pg_schema})",
        "schema": pg_schema,
        "previous_version": None,
        "version": SCHEMA_VERSION,
        "changed": True,
    }
    store = PostgresOutbox(postgres_url, schema=pg_schema, create=False)
    try:
        put(store, 3)
        again = cli("migrate", "--config", str(config), env=env)
        assert again.exit_code == 0, again.output
        assert f"is up to date (schema version {SCHEMA_VERSION})" in again.stdout
        assert store.stats(time.time()).events == 3  # nothing queued was touched
    finally:
        store.close()
    assert sql(postgres_url, f'SELECT version FROM "{pg_schema}".schema_version') == [
        (SCHEMA_VERSION,)
    ]


def test_two_processes_migrating_at_once_are_safe(postgres_url: str, pg_schema: str) -> None:
    from router_core.outbox.postgres import migrate_schema

    results: list[Any] = [None] * 4
    start = threading.Barrier(len(results))

    def run(n: int) -> None:
        start.wait()
        try:
            results[n] = migrate_schema(postgres_url, pg_schema)[1]
        except Exception as exc:
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(results))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert [r.changed for r in results].count(True) == 1, results
    assert all(r.version == SCHEMA_VERSION for r in results)


def test_migrate_explains_a_sqlite_outbox_needs_none(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text(f'[queue]\npath = "{tmp_path / "o.db"}"\n', encoding="utf-8")
    done = CliRunner().invoke(CLI, ["outbox", "migrate", "-c", str(config)])
    assert done.exit_code == 2
    assert "migrate is for a PostgreSQL one" in done.output


def test_migrate_refuses_a_newer_schema(postgres_url: str, pg_schema: str, tmp_path: Path) -> None:
    PostgresOutbox(postgres_url, schema=pg_schema).close()
    set_version(postgres_url, pg_schema, SCHEMA_VERSION + 1)
    config = write_config(tmp_path, postgres_url, pg_schema)
    done = CliRunner().invoke(CLI, ["outbox", "migrate", "-c", str(config)])
    assert done.exit_code == 2
    assert "never downgrades" in done.output


# -- secrets --------------------------------------------------------------------------------


def test_the_password_never_shows(
    postgres_url: str, pg_schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="event_router")
    url, password = with_password(postgres_url)
    store = PostgresOutbox(url, schema=pg_schema)  # creating the schema logs a line
    try:
        assert redact(f"x {password} y") == f"x {MASK} y"  # registered as a secret
        assert password not in repr(store)
        assert password not in store.location
        assert MASK in store.location
        # A failing statement: the schema is gone under the outbox's feet.
        sql(postgres_url, f'DROP SCHEMA "{pg_schema}" CASCADE')
        with pytest.raises(PostgresOutboxError) as failed:
            store.pending(["a"])
        assert password not in str(failed.value)
        assert store.location in str(failed.value)
    finally:
        store.close()
    # A server that does not answer.
    dead = url.replace(url.partition("@")[2].partition("/")[0], "127.0.0.1:1")
    with pytest.raises(PostgresOutboxError) as unreachable:
        PostgresOutbox(dead, schema=pg_schema)
    assert password not in str(unreachable.value)
    assert "cannot open" in str(unreachable.value)
    logged = caplog.text
    assert "outbox_schema_migrated" in logged
    assert password not in logged


# -- status, replay, purge ------------------------------------------------------------------


def test_status_shows_dead_tuples(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    for table in ("events", "deliveries"):  # nothing may clean up before we look
        sql(postgres_url, f'ALTER TABLE "{pg_schema}".{table} SET (autovacuum_enabled = false)')
    put(pg_outbox, 200)
    token = f"{os.getpid()}-{uuid.uuid4().hex}"  # as long as a worker's
    rows = claim(pg_outbox, token, batch_size=200)
    pg_outbox.ack("a", token, [r.event_id for r in rows])
    pg_outbox.close()  # its connections report their statistics as they end
    store = PostgresOutbox(postgres_url, schema=pg_schema)
    try:
        stats = wait_for(
            lambda: (s := store.stats(time.time())).dead_tuples.get("deliveries", 0) >= 200 and s,
            "the deletions to reach pg_stat_user_tables",
        )
    finally:
        store.close()
    assert stats.dead_tuples["events"] >= 200
    # The claim changes no indexed column, so its updates can be HOT (no index entry
    # written) wherever the page has room: most do (none would, were claim_token indexed).
    ((updated, hot),) = sql(
        postgres_url,
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables"
        " WHERE schemaname = %s AND relname = 'deliveries'",
        (pg_schema,),
    )
    assert updated == 200
    assert hot > updated // 2
    config = write_config(tmp_path, postgres_url, pg_schema)
    as_json = cli("status", "-c", str(config), "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["dead_tuples"]["deliveries"] >= 200
    text = cli("status", "-c", str(config))
    assert text.exit_code == 0, text.output
    line = next(x for x in text.stdout.splitlines() if x.startswith("dead tuples"))
    assert "deliveries" in line
    assert "events" in line


def test_status_replay_and_purge_on_postgres(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    with SegmentEmulator() as segment:
        destinations = (
            '[destinations.segment]\nplugin = "segment"\nwrite_key = "wk_pg_cli_0123456789"\n'
            f'host = "{segment.url}"\ntimeout = 2.0\n'
        )
        config = write_config(tmp_path, postgres_url, pg_schema, destinations)
        missing = cli("status", "-c", str(config))
        assert missing.exit_code == 0
        assert "no outbox at" in missing.stdout
        segment.faults.set(statuses=[400] * 1000)
        with Router.from_config(config) as router:
            ids = [router.send(Event.track("E", user_id=f"u{i}")).message_id for i in range(5)]
            assert router.flush(timeout=WAIT).dead == {"segment": 5}
        segment.faults.clear()
        status = json.loads(cli("status", "-c", str(config), "--json").stdout)
        assert status["destinations"] == {
            "segment": {"pending": 0, "retrying": 0, "in_flight": 0, "dead": 5}
        }
        assert status["outbox"] == f"{postgres_url} (schema {pg_schema})"
        replayed = cli("replay", "-c", str(config))
        assert replayed.exit_code == 0, replayed.output
        assert "replayed 5 dead letter(s)" in replayed.stdout
        assert sorted(segment.message_ids()) == sorted(ids)
        segment.faults.set(statuses=[400] * 1000)
        with Router.from_config(config) as router:
            router.send(Event.track("E", user_id="again"))
            router.flush(timeout=WAIT)
        purged = cli("purge", "-c", str(config), "--dead-only", "--yes", "--json")
        assert json.loads(purged.stdout) == {"purged": 1}
    after = json.loads(cli("status", "-c", str(config), "--json").stdout)
    assert (after["destinations"], after["events"]) == ({}, 0)


# -- processes and connections --------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_uses_connections_of_its_own(
    pg_outbox: PostgresOutbox, postgres_url: str, pg_schema: str
) -> None:
    put(pg_outbox, 1)  # the parent's pool is open and holds a connection
    pid = os.fork()
    if pid == 0:  # the child: a new pool; the parent's sockets are left alone
        code = 1
        try:
            pg_outbox.after_fork_in_child()
            code = 0 if put(pg_outbox, 1) == 1 else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert put(pg_outbox, 1) == 1  # the parent's connection still works
    assert pg_outbox.stats(time.time()).events == 3


def test_a_lost_connection_is_replaced(postgres_url: str, pg_schema: str) -> None:
    name = f"er-test-{uuid.uuid4().hex[:8]}"
    joiner = "&" if "?" in postgres_url else "?"
    store = PostgresOutbox(f"{postgres_url}{joiner}application_name={name}", schema=pg_schema)
    try:
        assert put(store, 1) == 1
        # The server restarts, or a proxy drops the idle connection.
        killed = sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (name,),
        )
        assert killed
        assert all(ok for (ok,) in killed)
        wait_for(
            lambda: (
                not sql(
                    postgres_url,
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = %s",
                    (name,),
                )
            ),
            "the connection to end",
        )
        assert put(store, 1) == 1
        assert store.stats(time.time()).events == 2
    finally:
        store.close()
