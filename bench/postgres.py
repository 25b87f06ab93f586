"""The PostgreSQL outbox: what a send costs the caller, and how delivery scales with workers.

Needs a PostgreSQL server: ``EVENT_ROUTER_BENCH_POSTGRES_URL``, else the local one on
127.0.0.1:5432 (database ``test``). Every run uses a schema of its own and drops it.

- **caller**: ``send()`` into PostgreSQL on its own (one commit each), and the added cost of
  ``send(connection=...)`` in an app transaction that commits anyway (one insert of the app's);
- **one worker**: deliveries/s one ``event-router worker`` claims and acknowledges with a
  destination that answers at once;
- **scaling**: four destinations that answer every request after 100 ms; events/s with 1, 2,
  4 and 8 worker processes, and each rate over N times one worker's (target ≥ 0.8).
"""

from __future__ import annotations

import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from bench.servers import EmulatorProcess
from router_core import Event, Router

__all__ = ["run"]

URL = os.environ.get("EVENT_ROUTER_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SCALING_TARGET = 0.8
_WORKER = [sys.executable, "-c", "from router_core.cli import main; main()", "worker"]
_WAIT_S = 600.0


@contextmanager
def _schema() -> Iterator[str]:
    name = f"event_router_bench_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        with psycopg.connect(URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def _config(directory: Path, schema: str, host: str, destinations: int, batch_size: int) -> Path:
    lines = [
        "[queue]",
        f'url = "{URL}"',
        f'schema = "{schema}"',
        f"batch_size = {batch_size}",
        "flush_interval = 0.05",
        "lease = 30.0",
    ]
    for n in range(destinations):
        lines += [
            f"[destinations.d{n}]",
            'plugin = "segment"',
            f'write_key = "wk_bench_{n}_0123456789"',
            f'host = "{host}"',
        ]
    path = directory / f"{schema}.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _bulk_enqueue(schema: str, destinations: list[str], count: int) -> None:
    """``count`` events for ``destinations``, stored in one statement (the rows send() makes)."""
    events = [Event.track("Bench", user_id=f"u{i}") for i in range(count)]
    s = f'"{schema}"'
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute(
            f"WITH new AS (INSERT INTO {s}.events (message_id, payload, size, destinations)"
            " SELECT m, p, length(p), %(names)s::text[]"
            " FROM unnest(%(ids)s::text[], %(payloads)s::text[]) WITH ORDINALITY AS t(m, p, n)"
            " ORDER BY n RETURNING id),"
            f" rows AS (INSERT INTO {s}.deliveries (destination, event_id)"
            " SELECT name, id FROM new, unnest(%(names)s::text[]) AS name)"
            f" INSERT INTO {s}.admitted_tx (events, bytes) SELECT count(*), 0 FROM new",
            {
                "names": destinations,
                "ids": [e.message_id for e in events],
                "payloads": [e.model_dump_json() for e in events],
            },
        )


def _caller(count: int, repeat: int) -> dict[str, Any]:
    alone: list[float] = []
    added: list[float] = []
    with _schema() as schema, psycopg.connect(URL) as conn:
        queue = {"url": URL, "schema": schema, "deliver": False}
        destinations = {"a": {"plugin": "segment", "write_key": "wk_bench_caller_0123"}}
        with Router(destinations, queue=queue) as router:
            conn.execute(f'CREATE TABLE "{schema}".orders (id bigint, total numeric)')
            conn.commit()
            event = Event.track("Order Completed", user_id="u", properties={"total": 9.5})
            for _ in range(repeat):
                began = time.perf_counter()
                for _ in range(count):
                    router.send(event)
                alone.append((time.perf_counter() - began) / count * 1e6)
                plain = with_send = 0.0
                for i in range(count):
                    began = time.perf_counter()
                    conn.execute(f'INSERT INTO "{schema}".orders VALUES (%s, 9.5)', (i,))
                    conn.commit()
                    plain += time.perf_counter() - began
                    began = time.perf_counter()
                    conn.execute(f'INSERT INTO "{schema}".orders VALUES (%s, 9.5)', (i,))
                    router.send(event, connection=conn)
                    conn.commit()
                    with_send += time.perf_counter() - began
                added.append((with_send - plain) / count * 1e6)
    result = {
        "send_us": statistics.median(alone),
        "in_transaction_added_us": statistics.median(added),
    }
    print(
        f"  send() on its own          {result['send_us']:8.0f} µs (one commit each)\n"
        f"  send(connection=) added    {result['in_transaction_added_us']:8.0f} µs "
        "to an app transaction that commits anyway"
    )
    return result


def _delivered(schema: str) -> int:
    with psycopg.connect(URL, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".deliveries').fetchone()
    return int(row[0]) if row else 0


def _workers_seen(schema: str) -> int:
    with psycopg.connect(URL, autocommit=True) as conn:
        row = conn.execute(f'SELECT count(*) FROM "{schema}".workers').fetchone()
    return int(row[0]) if row else 0


def _drain_rate(
    directory: Path,
    host: str,
    *,
    workers: int,
    destinations: int,
    batch_size: int,
    events: int,
) -> float:
    """Rows (event x destination) delivered per second by ``workers`` worker processes."""
    from router_core.outbox.postgres import PostgresOutbox  # noqa: PLC0415

    with _schema() as schema:
        config = _config(directory, schema, host, destinations, batch_size)
        PostgresOutbox(URL, schema=schema).close()
        env = {**os.environ, "EVENT_ROUTER_LOG_LEVEL": "warning"}
        procs = [subprocess.Popen([*_WORKER, "-c", str(config)], env=env) for _ in range(workers)]
        try:
            deadline = time.monotonic() + _WAIT_S
            while _workers_seen(schema) < workers and time.monotonic() < deadline:
                time.sleep(0.1)  # every worker is up (its first heartbeat) before the clock
            _bulk_enqueue(schema, [f"d{n}" for n in range(destinations)], events)
            began = time.perf_counter()
            while _delivered(schema) and time.monotonic() < deadline:
                time.sleep(0.02)
            elapsed = time.perf_counter() - began
        finally:
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            for proc in procs:
                proc.wait(60)
    return events * destinations / elapsed


def run(quick: bool, repeat: int) -> dict[str, Any]:
    """Every PostgreSQL figure; printed as they come."""
    results: dict[str, Any] = {"caller": _caller(300 if quick else 2000, repeat)}
    with tempfile.TemporaryDirectory() as tmp, EmulatorProcess("segment") as fast:
        directory = Path(tmp)
        one = _drain_rate(
            directory, fast.url, workers=1, destinations=1, batch_size=500,
            events=5_000 if quick else 50_000,
        )  # fmt: skip
        results["one_worker_deliveries_per_s"] = one
        print(f"  one worker, fast destination  {one:10,.0f} deliveries/s (claim, send, ack)")
    with tempfile.TemporaryDirectory() as tmp, EmulatorProcess("segment") as slow:
        slow.set_latency(0.1)
        directory = Path(tmp)
        per_worker = 100 if quick else 400  # events per worker: a few seconds each point
        rates: dict[int, float] = {}
        for n in (1, 2, 4, 8):
            rates[n] = _drain_rate(
                directory, slow.url, workers=n, destinations=4, batch_size=10,
                events=per_worker * n,
            ) / 4  # fmt: skip
        ratios = {n: rates[n] / (n * rates[1]) for n in rates}
        results["scaling"] = {"events_per_s": rates, "ratio": ratios}
        for n, rate in rates.items():
            verdict = "target met" if ratios[n] >= SCALING_TARGET else "TARGET MISSED"
            print(
                f"  {n} worker(s), 4 destinations at 100 ms  {rate:8,.0f} events/s   "
                f"{ratios[n]:.2f} x N x one worker's ({verdict}: ≥ {SCALING_TARGET})"
            )
    return results
