"""Delivery workers as processes of their own, on a real PostgreSQL server (tests/postgres.py).

Each test starts real ``event-router worker`` subprocesses against a fresh schema and real
HTTP destinations on loopback (``Destination`` below), and kills them the way a machine or an
orchestrator would. Also: transactional send through psycopg and SQLAlchemy, ``max_in_flight``
across workers, ``deliver = false``, and copying an outbox.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from router_core import Event, Router
from router_core.cli import main
from router_core.outbox import DeliveryDisabledError, TransactionalSendError
from router_core.outbox.postgres import SCHEMA_VERSION, PostgresOutbox

WAIT = 60.0  # a generous bound on every wait; the tests finish far sooner
WORKER = [sys.executable, "-c", "from router_core.cli import main; main()", "worker"]


class Destination:
    """A Segment-compatible server on loopback that records every batch it accepts.

    ``fail_every``: every n-th request is answered 503 (and records nothing); ``delay``:
    seconds before answering; ``down``: every request is answered 503; ``hold_first``: the
    first request waits until ``close()``, then fails (its sender is meant to be killed
    meanwhile). ``peak`` is the most requests it was handling at one time.
    """

    def __init__(
        self,
        *,
        fail_every: int = 0,
        delay: float = 0.0,
        down: bool = False,
        hold_first: bool = False,
    ) -> None:
        self.fail_every, self.delay, self.down = fail_every, delay, down
        self.hold_first = hold_first
        self.released = threading.Event()
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.requests = 0
        self.active = 0
        self.peak = 0
        state = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with state.lock:
                    state.requests += 1
                    state.active += 1
                    state.peak = max(state.peak, state.active)
                    held = state.hold_first and state.requests == 1
                    failing = (
                        held
                        or state.down
                        or (state.fail_every and state.requests % state.fail_every == 0)
                    )
                try:
                    if held:
                        state.released.wait()
                    if state.delay:
                        time.sleep(state.delay)
                    if not failing:
                        with state.lock:
                            state.accepted.update(m["messageId"] for m in body["batch"])
                    answer = b'{"success": true}'
                    self.send_response(503 if failing else 200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the worker was killed mid-request
                finally:
                    with state.lock:
                        state.active -= 1

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> set[str]:
        with self.lock:
            return set(self.accepted)

    def duplicates(self) -> int:
        with self.lock:
            return sum(n - 1 for n in self.accepted.values())

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def servers() -> Iterator[list[Destination]]:
    made: list[Destination] = []
    yield made
    for server in made:
        server.close()


def write_config(
    path: Path, url: str, schema: str, destinations: dict[str, Destination], **queue: Any
) -> Path:
    # Commits without waiting for the server's disk: these tests kill workers, not servers.
    url += "?options=-c%20synchronous_commit%3Doff"
    settings = {
        "flush_interval": 0.05,
        "batch_size": 50,
        "lease": 2.0,
        "close_timeout": 5.0,
        **queue,
    }
    lines = ["[queue]", f'url = "{url}"', f'schema = "{schema}"']
    lines += [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    lines.append("retry = { max_attempts = 1000, backoff_min = 0.01, backoff_base = 0.02, "
                 "backoff_max = 0.2, max_elapsed = 600.0 }")  # fmt: skip
    for name, server in destinations.items():
        lines += [
            f"[destinations.{name}]",
            'plugin = "segment"',
            'write_key = "wk_workers_0123456789"',
            f'host = "{server.url}"',
            "timeout = 1.0",
        ]
        if name.startswith("capped"):
            lines.append("max_in_flight = 2")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_workers(config: Path, count: int, *extra: str) -> list[subprocess.Popen[bytes]]:
    env = {**os.environ, "EVENT_ROUTER_LOG_LEVEL": "warning"}
    return [
        subprocess.Popen([*WORKER, "-c", str(config), *extra], env=env, stderr=subprocess.PIPE)
        for _ in range(count)
    ]


def stop(workers: list[subprocess.Popen[bytes]]) -> list[int]:
    """SIGTERM each worker; their exit codes (each must exit within its bound)."""
    for worker in workers:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=WAIT) for worker in workers]


def kill(workers: list[subprocess.Popen[bytes]]) -> None:
    for worker in workers:
        worker.kill()
        worker.wait(timeout=WAIT)


def wait_for(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"gave up waiting for {what}")


def enqueue(config: Path, count: int) -> set[str]:
    """Store ``count`` events for every destination of ``config``, in one statement.

    The rows are what ``send()`` writes (tests/test_outbox_postgres.py shows that path); one
    statement keeps thousands of them from costing the test a commit each.
    """
    from router_core.config import RouterConfig

    loaded = RouterConfig.load(config)
    assert loaded.queue is not None
    url, schema = loaded.queue["url"], loaded.queue["schema"]
    PostgresOutbox(url, schema=schema).close()  # creates the schema
    events = [Event.track("E", user_id=f"u{i}") for i in range(count)]
    payloads = [e.model_dump_json() for e in events]
    s = f'"{schema}"'
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"WITH new AS (INSERT INTO {s}.events (message_id, payload, size, destinations)"
            " SELECT m, p, length(p), %(names)s::text[]"
            " FROM unnest(%(ids)s::text[], %(payloads)s::text[]) WITH ORDINALITY AS t(m, p, n)"
            " ORDER BY n RETURNING id),"
            f" rows AS (INSERT INTO {s}.deliveries (destination, event_id)"
            " SELECT name, id FROM new, unnest(%(names)s::text[]) AS name)"
            f" INSERT INTO {s}.admitted_tx (events, bytes)"
            " SELECT count(*), 0 FROM new",
            {
                "names": list(loaded.destinations),
                "ids": [e.message_id for e in events],
                "payloads": payloads,
            },
        )
    return {e.message_id for e in events}


def pending(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".deliveries').fetchone()
    assert row is not None
    return int(row[0])


# -- many workers ---------------------------------------------------------------------------


def test_ten_thousand_events_through_four_workers_with_a_failing_destination(
    postgres_url: str, pg_schema: str, tmp_path: Path, servers: list[Destination]
) -> None:
    steady, flaky = Destination(), Destination(fail_every=2)
    servers += [steady, flaky]
    config = write_config(
        tmp_path / "router.toml", postgres_url, pg_schema, {"steady": steady, "flaky": flaky},
        batch_size=100,
    )  # fmt: skip
    sent = enqueue(config, 10_000)
    workers = start_workers(config, 4)
    wait_for(lambda: pending(postgres_url, pg_schema) == 0, "every row delivered")
    assert stop(workers) == [0, 0, 0, 0]
    assert flaky.requests >= 2 * (10_000 // 100) - 1  # half its requests failed
    for server in (steady, flaky):
        assert server.received() == sent  # nothing lost
        assert server.duplicates() == 0  # exactly once per destination
    status = CliRunner().invoke(main, ["outbox", "status", "-c", str(config), "--json"])
    assert status.exit_code == 0, status.output
    shown = json.loads(status.stdout)
    assert len(shown["workers"]) == 4
    assert all(w["stopped"] for w in shown["workers"])
    assert sum(w["delivered"] for w in shown["workers"]) == 20_000


def test_a_killed_workers_batch_is_delivered_by_another_after_its_lease(
    postgres_url: str, pg_schema: str, tmp_path: Path, servers: list[Destination]
) -> None:
    slow = Destination(hold_first=True)
    servers.append(slow)
    config = write_config(tmp_path / "router.toml", postgres_url, pg_schema, {"slow": slow})
    sent = enqueue(config, 20)  # one batch
    [first] = start_workers(config, 1)
    wait_for(lambda: slow.requests >= 1, "the first worker's request")
    kill([first])  # mid-batch: its request is in flight, its rows are claimed
    [second] = start_workers(config, 1)
    wait_for(lambda: slow.received() == sent, "the second worker to deliver the batch")
    assert stop([second]) == [0]
    assert pending(postgres_url, pg_schema) == 0


def test_all_workers_killed_and_restarted_lose_nothing(
    postgres_url: str, pg_schema: str, tmp_path: Path, servers: list[Destination]
) -> None:
    target = Destination(delay=0.02)
    servers.append(target)
    config = write_config(tmp_path / "router.toml", postgres_url, pg_schema, {"target": target})
    sent = enqueue(config, 1000)
    workers = start_workers(config, 3)
    wait_for(lambda: len(target.received()) >= 100, "some deliveries")
    kill(workers)
    assert pending(postgres_url, pg_schema) > 0
    restarted = start_workers(config, 3)
    wait_for(lambda: pending(postgres_url, pg_schema) == 0, "every row delivered")
    assert stop(restarted) == [0, 0, 0]
    assert target.received() == sent  # at least once: a killed batch may go twice


def test_max_in_flight_holds_across_workers_and_a_down_destination_slows_no_other(
    postgres_url: str, pg_schema: str, tmp_path: Path, servers: list[Destination]
) -> None:
    capped, down = Destination(delay=0.1), Destination(down=True)
    servers += [capped, down]
    config = write_config(
        tmp_path / "router.toml", postgres_url, pg_schema, {"capped": capped, "down": down},
        batch_size=10,
    )  # fmt: skip
    sent = enqueue(config, 300)
    workers = start_workers(config, 3, "--concurrency", "2")  # up to 6 batches at once
    wait_for(lambda: capped.received() == sent, "the capped destination's deliveries")
    assert stop(workers) == [0, 0, 0]
    assert capped.peak <= 2
    assert capped.duplicates() == 0
    assert down.requests > 0
    assert not down.received()


def test_the_worker_refuses_a_schema_of_another_version(
    postgres_url: str, pg_schema: str, tmp_path: Path, servers: list[Destination]
) -> None:
    target = Destination()
    servers.append(target)
    config = write_config(tmp_path / "router.toml", postgres_url, pg_schema, {"target": target})
    PostgresOutbox(postgres_url, schema=pg_schema).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'UPDATE "{pg_schema}".schema_version SET version = %s', (SCHEMA_VERSION + 1,))
    done = subprocess.run(
        [*WORKER, "-c", str(config)], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert f"version {SCHEMA_VERSION + 1}" in lines[0]


def test_a_worker_needs_a_shared_outbox(tmp_path: Path) -> None:
    config = tmp_path / "router.toml"
    config.write_text('[queue]\nbackend = "memory"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["worker", "-c", str(config)])
    assert result.exit_code == 2
    assert "memory" in result.output


# -- deliver = false ------------------------------------------------------------------------


def test_a_router_that_only_enqueues_starts_no_worker_and_cannot_flush(tmp_path: Path) -> None:
    queue = {"path": str(tmp_path / "outbox.db"), "deliver": False, "flush_interval": 0.01}
    with Router(
        {"a": {"plugin": "segment", "write_key": "wk_only_enqueue_0123"}}, queue=queue
    ) as r:
        r.send(Event.track("E", user_id="u"))
        assert r._queue is not None
        assert r._queue.worker_counts() == (0, 0)
        assert not r._queue._workers
        with pytest.raises(DeliveryDisabledError, match="deliver = false"):
            r.flush(timeout=1)
        assert r.outbox is not None
        assert r.outbox.pending(["a"]) == {"a": 1}


# -- transactional send ---------------------------------------------------------------------


def _tx_router(url: str, schema: str) -> Router:
    destinations = {"a": {"plugin": "segment", "write_key": "wk_transactional_01"}}
    return Router(destinations, queue={"url": url, "schema": schema, "deliver": False})


def _message_ids(url: str, schema: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            f'SELECT e.message_id FROM "{schema}".events AS e'
            f' JOIN "{schema}".deliveries AS d ON d.event_id = e.id'
        ).fetchall()
    return {r[0] for r in rows}


def test_a_transactional_send_commits_and_rolls_back_with_the_app(
    postgres_url: str, pg_schema: str
) -> None:
    with _tx_router(postgres_url, pg_schema) as router, psycopg.connect(postgres_url) as conn:
        conn.execute(f'CREATE TABLE "{pg_schema}".orders (id int)')
        conn.commit()
        kept = router.send(Event.track("Kept", user_id="u"), connection=conn).message_id
        conn.execute(f'INSERT INTO "{pg_schema}".orders VALUES (1)')
        assert kept not in _message_ids(postgres_url, pg_schema)  # never before the commit
        conn.commit()
        assert kept in _message_ids(postgres_url, pg_schema)
        gone = Event.track("Gone", user_id="u").message_id

        def roll_back() -> None:
            with conn.transaction():
                router.send(Event.track("Gone", user_id="u", message_id=gone), connection=conn)
                raise ZeroDivisionError

        with pytest.raises(ZeroDivisionError):
            roll_back()
        assert gone not in _message_ids(postgres_url, pg_schema)
        stats = router.outbox.stats(time.time()) if router.outbox else None
        assert stats is not None
        assert stats.events == 1


def test_a_transactional_send_through_a_sqlalchemy_session(
    postgres_url: str, pg_schema: str
) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm import Session

    engine = create_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with _tx_router(postgres_url, pg_schema) as router:
            with Session(engine) as session:
                kept = router.send(Event.track("Kept", user_id="u"), connection=session)
                session.commit()
            with Session(engine) as session:
                session.execute(text("SELECT 1"))
                gone = router.send(Event.track("Gone", user_id="u"), connection=session)
                session.rollback()
            with engine.connect() as connection:
                also = router.send(Event.track("Also", user_id="u"), connection=connection)
                connection.commit()
    finally:
        engine.dispose()
    stored = _message_ids(postgres_url, pg_schema)
    assert kept.message_id in stored
    assert also.message_id in stored
    assert gone.message_id not in stored


def test_an_open_transactional_send_blocks_no_other_sender(
    postgres_url: str, pg_schema: str
) -> None:
    queue = {"url": postgres_url, "schema": pg_schema, "deliver": False, "max_events": 1000}
    destinations = {"a": {"plugin": "segment", "write_key": "wk_transactional_01"}}
    with Router(destinations, queue=queue) as router, psycopg.connect(postgres_url) as conn:
        router.send(Event.track("Open", user_id="u"), connection=conn)  # not committed yet
        others = threading.Thread(
            target=lambda: [router.send(Event.track("E", user_id="o")) for _ in range(200)]
        )
        others.start()
        others.join(timeout=WAIT)
        assert not others.is_alive()  # 200 sends, and slow paths, went past the open transaction
        conn.commit()
        assert router.outbox is not None
        assert router.outbox.pending(["a"]) == {"a": 201}


def test_transactional_send_explains_what_it_cannot_use(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    other = postgres_url.rsplit("/", 1)[0] + "/postgres"
    with _tx_router(postgres_url, pg_schema) as router:
        with (
            psycopg.connect(postgres_url, autocommit=True) as conn,
            pytest.raises(TransactionalSendError, match="autocommit"),
        ):
            router.send(Event.track("E", user_id="u"), connection=conn)
        with (
            psycopg.connect(other) as conn,
            pytest.raises(TransactionalSendError, match="database 'postgres'"),
        ):
            router.send(Event.track("E", user_id="u"), connection=conn)
        with pytest.raises(TransactionalSendError, match="psycopg 3"):
            router.send(Event.track("E", user_id="u"), connection=object())
    sqlite = {"path": str(tmp_path / "outbox.db")}
    with (
        Router({"a": {"plugin": "segment", "write_key": "wk_x_0123456789"}}, queue=sqlite) as r,
        psycopg.connect(postgres_url) as conn,
        pytest.raises(TransactionalSendError, match="PostgreSQL"),
    ):
        r.send(Event.track("E", user_id="u"), connection=conn)


# -- copying an outbox ----------------------------------------------------------------------


def test_outbox_copy_moves_pending_and_dead_rows_from_sqlite_to_postgres(
    postgres_url: str, pg_schema: str, tmp_path: Path
) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        f'[queue]\npath = "{tmp_path / "outbox.db"}"\ndeliver = false\n'
        '[destinations.a]\nplugin = "segment"\nwrite_key = "wk_copy_0123456789"\n'
        '[destinations.b]\nplugin = "segment"\nwrite_key = "wk_copy_0123456789"\n',
        encoding="utf-8",
    )
    with Router.from_config(config) as router:
        sent = {router.send(Event.track("E", user_id=f"u{i}")).message_id for i in range(30)}
        assert router.outbox is not None
        router.outbox.purge(dead_only=False, destination="b")  # a's rows only, from here on
    copied = CliRunner().invoke(
        main, ["outbox", "copy", "-c", str(config), "--to", postgres_url, "--schema", pg_schema]
    )
    assert copied.exit_code == 0, copied.output
    assert "copied 30 event(s)" in copied.stdout
    assert _message_ids(postgres_url, pg_schema) == sent
    target = PostgresOutbox(postgres_url, schema=pg_schema)
    try:
        assert target.pending(["a", "b"]) == {"a": 30, "b": 0}
        assert target.stats(time.time()).events == 30
    finally:
        target.close()
    again = CliRunner().invoke(
        main, ["outbox", "copy", "-c", str(config), "--to", postgres_url, "--schema", pg_schema]
    )
    assert again.exit_code == 2
    assert "already holds events" in again.output
