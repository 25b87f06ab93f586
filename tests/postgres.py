"""A real PostgreSQL server for the tests (never a mock), and fresh schemas on it.

The server, in this order:

1. ``EVENT_ROUTER_TEST_POSTGRES_URL``, when set (it must answer);
2. the server on 127.0.0.1:5432 (user ``postgres``, database ``test``), when it answers;
3. a throwaway cluster made with ``initdb`` and started with ``pg_ctl`` in a temporary
   directory on a free port (as an unprivileged user when the tests run as root, which
   ``initdb`` refuses), stopped at the end;
4. otherwise the tests that need it skip, with one line saying how to run them; under
   ``CI=true`` they fail with that line instead: CI never skips them.

Each test session names its schemas ``event_router_test_<random>_<n>`` (one per test) and
drops them all at the end, with ``CASCADE``. tests/conftest.py imports these fixtures.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

from router_core.dburl import mask_url
from router_core.testing.outbox_contract import ClockedOutbox as ClockedOutboxBase

if TYPE_CHECKING:  # imported lazily: without psycopg these tests skip, the others still run
    from router_core.outbox.postgres import PostgresOutbox

# The fixtures, which tests/conftest.py imports with one line.
__all__ = [
    "clocked_postgres_outbox",
    "pg_outbox",
    "pg_schema",
    "postgres_schema_names",
    "postgres_url",
]

ENV_VAR = "EVENT_ROUTER_TEST_POSTGRES_URL"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/test"
HOW_TO_RUN = (
    f"the PostgreSQL tests need a server: set {ENV_VAR}=postgresql://USER@HOST:PORT/DB, "
    "or run one on 127.0.0.1:5432 (user postgres, database test), "
    "or put initdb and pg_ctl on PATH"
)
_START_TIMEOUT_S = 60


def _unavailable(reason: str) -> NoReturn:
    message = f"{HOW_TO_RUN} ({reason})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _answers(url: str) -> str | None:
    """``None`` when ``url`` takes a connection, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().partition("\n")[0]
    return None


@dataclass
class _Cluster:
    url: str
    data: Path
    pg_ctl: str
    user: str | None

    def stop(self) -> None:
        subprocess.run(
            [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
            user=self.user,
            capture_output=True,
            check=False,
            timeout=_START_TIMEOUT_S,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_throwaway_cluster(base: Path) -> _Cluster | str:
    """A new cluster under ``base`` on a free port, or why there cannot be one."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        return "initdb and pg_ctl are not on PATH"
    user: str | None = None
    if os.geteuid() == 0:  # initdb refuses to run as root
        for name in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                entry = pwd.getpwnam(name)
                user = name
                break
        else:
            return "running as root and there is no postgres or nobody user to run initdb as"
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data = base / "data"
    port = _free_port()
    steps = [
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        [
            pg_ctl, "-D", str(data), "-l", str(base / "server.log"), "-w",
            "-t", str(_START_TIMEOUT_S), "-o",
            f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off", "start",
        ],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(
            step, user=user, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            output = (done.stderr or done.stdout).strip().splitlines()
            return f"{Path(step[0]).name} failed: {output[-1] if output else done.returncode}"
    return _Cluster(f"postgresql://postgres@127.0.0.1:{port}/postgres", data, pg_ctl, user)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The URL of a PostgreSQL database the tests may create schemas in."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed: pip install 'event-router[postgres]'")
    given = os.environ.get(ENV_VAR)
    if given:
        problem = _answers(given)
        if problem is not None:  # asked for by name: a failure, never a skip
            pytest.fail(f"{ENV_VAR}={mask_url(given)} does not answer: {problem}", pytrace=False)
        yield given
        return
    if _answers(LOCAL_URL) is None:
        yield LOCAL_URL
        return
    # Not under pytest's own temporary directory: its parents are private to the user running
    # the tests, and the cluster may run as another (initdb refuses root).
    base = Path(tempfile.mkdtemp(prefix="event-router-test-postgres-"))
    try:
        cluster = start_throwaway_cluster(base)
        if isinstance(cluster, str):
            _unavailable(f"nothing answers on 127.0.0.1:5432 and {cluster}")
        try:
            yield cluster.url
        finally:
            cluster.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_schema_names(postgres_url: str) -> Iterator[Iterator[str]]:
    """Fresh schema names for this session; every one of them is dropped at the end."""
    import psycopg

    prefix = f"event_router_test_{secrets.token_hex(4)}"
    yield (f"{prefix}_{n}" for n in itertools.count(1))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        names = conn.execute(
            "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, %s)",
            (f"{prefix}_",),
        ).fetchall()
        for (name,) in names:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_schema(postgres_url: str, postgres_schema_names: Iterator[str]) -> Iterator[str]:
    """A schema name no test used before (nothing is created; dropped after the test)."""
    import psycopg

    name = next(postgres_schema_names)
    yield name
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def pg_outbox(postgres_url: str, pg_schema: str) -> Iterator[PostgresOutbox]:
    """A ``PostgresOutbox`` in a fresh schema."""
    from router_core.outbox.postgres import PostgresOutbox

    outbox = PostgresOutbox(postgres_url, schema=pg_schema)
    yield outbox
    outbox.close()


class ClockedOutbox(ClockedOutboxBase):
    """A ``PostgresOutbox`` driven by the contract suite's made-up clock.

    A PostgreSQL outbox reads only the server's clock, so when the suite's ``now`` moves on by
    some seconds this moves every time stored in the outbox back by as much: to the outbox,
    exactly as if the server's clock had moved on.
    """

    def __init__(self, inner: PostgresOutbox, url: str) -> None:
        import psycopg

        super().__init__(inner)
        self._conn = psycopg.connect(url, autocommit=True)
        schema = f'"{inner.schema}"'
        back = "- %(s)s * interval '1 second'"
        self._shift = [
            f"UPDATE {schema}.deliveries SET next_attempt_at = next_attempt_at {back},"
            f" since = since {back}, updated_at = updated_at {back},"
            f" claimed_until = claimed_until {back}",
            f"UPDATE {schema}.events SET created_at = created_at {back}",
        ]

    def move_stored_times_back(self, seconds: float) -> None:
        for statement in self._shift:
            self._conn.execute(statement, {"s": seconds})

    def close(self) -> None:
        super().close()
        self._conn.close()


@pytest.fixture
def clocked_postgres_outbox(
    postgres_url: str, pg_outbox: PostgresOutbox
) -> Iterator[ClockedOutbox]:
    """The PostgreSQL outbox for the contract suite (router_core.testing.outbox_contract),
    as tests/test_outbox_store.py runs it."""
    clocked = ClockedOutbox(pg_outbox, postgres_url)
    yield clocked
    clocked.close()
