"""The outbox file in trouble, for real: garbage, other programs' databases, read-only files and
directories, a full disk, the file deleted or replaced while the router runs, a big WAL.

Each gives an error that names the path and says what to do (an ``OutboxUnavailableError``,
``OutboxDiskFullError`` for a full disk), and loses nothing that was accepted.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from router_core import (
    ConfigError,
    Delivery,
    DeliveryError,
    Destination,
    Event,
    OutboxDiskFullError,
    OutboxUnavailableError,
    Router,
    RouterError,
    hookimpl,
)
from router_core.outbox import SQLiteOutbox
from router_core.outbox import sqlite as sqlite_module
from router_core.outbox.spool import SpooledOutbox
from router_core.plugins import PluginRegistry
from tests.outbox_faults import fill, fingerprint, read_only, small_disk

WAIT = 60.0  # generous bound on every flush; tests finish far sooner
NEVER_FILLS = 100_000  # sends tried before a test gives up waiting for the disk to fill
FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.05, "max_attempts": 10_000}


class Instant:
    """An in-process destination that acknowledges at once, or fails (503) while down."""

    def __init__(self, *, up: bool = True) -> None:
        self.up = threading.Event()
        if up:
            self.up.set()
        self._lock = threading.Lock()
        self.delivered: list[str] = []

    @hookimpl
    async def send_event(self, destination: Destination[Any], event: Event) -> Delivery:
        return await self.send_batch(destination, [event])

    @hookimpl
    async def send_batch(self, destination: Destination[Any], events: Sequence[Event]) -> Delivery:
        if not self.up.is_set():
            raise DeliveryError("HTTP 503", status_code=503, retryable=True)
        with self._lock:
            self.delivered.extend(event.message_id for event in events)
        return Delivery(status_code=200)


def make_router(path: Path, plugin: Instant, **queue: Any) -> Router:
    registry = PluginRegistry(entry_points=False)
    registry.register(plugin, "instant")
    settings = {
        "path": str(path),
        "flush_interval": 0.01,
        "lease": 5.0,
        "close_timeout": 1.0,
        "retry": FAST_RETRY,
        **queue,
    }
    return Router({"instant": {"plugin": "instant"}}, plugins=registry, queue=settings)


def track(i: int) -> Event:
    return Event.track("Order Completed", user_id=f"user_{i}", properties={"n": i})


def send_until_refused(router: Router, accepted: list[str]) -> OutboxDiskFullError:
    """Send until the outbox refuses for want of room; ``accepted`` gets what it took."""
    for i in range(NEVER_FILLS):
        try:
            accepted.append(router.send(track(i)).message_id)
        except OutboxDiskFullError as exc:
            return exc
    pytest.fail(f"{NEVER_FILLS:,} events were accepted and the disk never filled")


def past_the_check() -> None:
    """Let the interval between two looks at the outbox's path and disk go by."""
    time.sleep(sqlite_module._CHECK_S * 2)


def sqlite_of(outbox: object) -> SQLiteOutbox:
    """The SQLite file behind a router's outbox (send() goes through a spool in front of it)."""
    inner = outbox.inner if isinstance(outbox, SpooledOutbox) else outbox
    assert isinstance(inner, SQLiteOutbox)
    return inner


def refused_eventually(
    router: Router, accepted: list[str], error: type[RouterError] = OutboxUnavailableError
) -> RouterError:
    """Send until ``send()`` refuses with ``error``; ``accepted`` gets what it took.

    The first events after the file turns unwritable may still be accepted, into this
    process's spool (durable: a spool file is on disk once send() returns); the spool's move
    into the file then fails, and from there on send() writes to the file itself and refuses.
    """
    deadline = time.monotonic() + WAIT
    i = 1_000
    while time.monotonic() < deadline:
        i += 1
        try:
            accepted.append(router.send(track(i)).message_id)
        except error as exc:
            return exc
        time.sleep(0.002)
    pytest.fail(f"send() kept accepting for {WAIT} s")


def pages(outbox: SQLiteOutbox, limit: int | None = None) -> int:
    """The database's size in pages; with ``limit``, cap it there (SQLite's max_page_count)."""
    with outbox.lock:
        conn = outbox._connection()
        if limit is not None:
            conn.execute(f"PRAGMA max_page_count = {limit}")
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


# -- files that are not an outbox -----------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [os.urandom(8192), b"order_id,total\n1,99.99\n" * 200, b"SQLite format 3\x00" + bytes(84)],
    ids=["random-bytes", "text", "sqlite-header-only"],
)
def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "outbox.db"
    path.write_bytes(content)
    with pytest.raises(OutboxUnavailableError) as caught:
        make_router(path, Instant())
    message = str(caught.value)
    assert str(path) in message
    assert "not an event-router outbox" in message or "damaged" in message
    assert "point [queue] path at another file" in message or "Move it aside" in message
    assert caught.value.path == str(path)
    assert path.read_bytes() == content


def test_an_empty_file_becomes_an_outbox(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    path.touch()
    plugin = Instant()
    with make_router(path, plugin) as router:
        accepted = router.send(track(1)).message_id
        assert router.flush(timeout=WAIT).complete
    assert plugin.delivered == [accepted]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == sqlite_module.APPLICATION_ID


def another_programs_database(path: Path, *, user_version: int, application_id: int) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT)")
        conn.execute("INSERT INTO customers (email) VALUES ('a@example.com')")
        conn.execute(f"PRAGMA user_version = {user_version}")
        conn.execute(f"PRAGMA application_id = {application_id}")
    conn.close()


@pytest.mark.parametrize(
    ("user_version", "application_id"),
    [(0, 0), (1, 0), (7, 0x12345678)],
    ids=["plain", "user-version-1", "own-application-id"],
)
def test_another_programs_database_is_refused_and_never_written(
    tmp_path: Path, user_version: int, application_id: int
) -> None:
    path = tmp_path / "app.db"
    another_programs_database(path, user_version=user_version, application_id=application_id)
    before = fingerprint(path)
    with pytest.raises(OutboxUnavailableError) as caught:
        make_router(path, Instant())
    message = str(caught.value)
    assert str(path) in message
    assert "another program's SQLite database" in message
    assert "customers" in message
    assert "nothing was written to it" in message
    assert fingerprint(path) == before
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as conn:  # still in its own journal mode, with its own data
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert conn.execute("SELECT email FROM customers").fetchall() == [("a@example.com",)]
    conn.close()


def test_an_outbox_made_before_application_id_is_still_opened(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    plugin = Instant(up=False)
    with make_router(path, plugin, close_timeout=0) as router:
        accepted = router.send(track(1)).message_id
    with sqlite3.connect(path) as conn:  # as event-router wrote it before marking its files
        conn.execute("PRAGMA application_id = 0")
    conn.close()
    plugin.up.set()
    with make_router(path, plugin) as router:
        assert router.flush(timeout=WAIT).complete
    assert plugin.delivered == [accepted]
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == sqlite_module.APPLICATION_ID
    conn.close()


def test_an_outbox_from_a_newer_event_router_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    SQLiteOutbox(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version = {sqlite_module.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(OutboxUnavailableError, match="Upgrade event-router") as caught:
        SQLiteOutbox(path)
    assert str(path) in str(caught.value)


def test_a_damaged_outbox_gives_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    with make_router(path, Instant(up=False), close_timeout=0) as router:
        for i in range(300):
            router.send(track(i))
    data = bytearray(path.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[page:] = os.urandom(len(data) - page)  # every page but the header's
    path.write_bytes(bytes(data))
    with pytest.raises(OutboxUnavailableError) as caught:  # noqa: PT012 - opening may tell
        outbox = SQLiteOutbox(path)
        try:
            outbox.stats(time.time())
        finally:
            outbox.close()
    message = str(caught.value)
    assert str(path) in message
    assert "damaged" in message or "not an event-router outbox" in message


# -- paths that cannot hold an outbox -------------------------------------------------------


def test_a_path_that_cannot_hold_an_outbox_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("a file, not a directory\n")
    cases = {
        tmp_path: "is a directory",
        Path(os.devnull): "must be a regular file",
        tmp_path / "notes.txt" / "outbox.db": "is a file, not a directory",
        tmp_path / "notes.txt" / "deeper" / "outbox.db": "is a file, not a directory",
    }
    for path, problem in cases.items():
        # Refused when the settings are read, and again when an outbox is opened there.
        with pytest.raises(ConfigError) as refused:
            make_router(path, Instant())
        with pytest.raises(OutboxUnavailableError) as caught:
            SQLiteOutbox(path)
        for error in (refused.value, caught.value):
            assert str(path) in str(error)
            assert problem in str(error)
    assert (tmp_path / "notes.txt").read_text() == "a file, not a directory\n"


def test_a_read_only_outbox_file_is_refused_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    SQLiteOutbox(path).close()
    with read_only(path), pytest.raises(OutboxUnavailableError) as caught:
        make_router(path, Instant())
    message = str(caught.value)
    assert f"the outbox {path} is read-only" in message
    assert "Make the file writable" in message


@pytest.mark.parametrize("existing", [True, False], ids=["existing-outbox", "new-outbox"])
def test_a_read_only_directory_is_refused_when_opened(tmp_path: Path, existing: bool) -> None:
    directory = tmp_path / "state"
    directory.mkdir()
    path = directory / "outbox.db"
    if existing:
        SQLiteOutbox(path).close()  # closing removes outbox.db-wal and -shm: they must be made
    with read_only(directory), pytest.raises(OutboxUnavailableError) as caught:
        make_router(path, Instant())
    message = str(caught.value)
    assert f"the directory {directory} of the outbox {path} is read-only" in message
    assert "outbox.db-wal" in message
    assert f"Make {directory} writable" in message


def test_an_outbox_made_read_only_while_running_refuses_then_resumes(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs chattr +i: permission bits do not stop writes to a file already open")
    path = tmp_path / "outbox.db"
    wal = Path(f"{path}-wal")
    plugin = Instant(up=False)
    with make_router(path, plugin) as router:
        accepted = [router.send(track(0)).message_id]
        with read_only(wal):
            caught = refused_eventually(router, accepted)
        message = str(caught)
        assert f"{wal}, part of the outbox {path}, is read-only" in message
        assert "The event was not accepted" in message
        accepted.append(router.send(track(2)).message_id)
        plugin.up.set()
        assert router.flush(timeout=WAIT).complete
    assert sorted(plugin.delivered) == sorted(accepted)


def test_a_locked_outbox_says_who_holds_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_module, "_BUSY_TIMEOUT_S", 0.1)
    path = tmp_path / "outbox.db"
    plugin = Instant(up=False)
    with make_router(path, plugin, close_timeout=0) as router:
        accepted = [router.send(track(1)).message_id]
        assert router.flush(timeout=0).pending == {"instant": 1}  # moved into the file
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another program keeps a write transaction open
        try:
            caught = refused_eventually(router, accepted)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        message = str(caught)
        assert f"the outbox {path} stayed locked" in message
        assert "The event was not accepted" in message
        plugin.up.set()
        assert router.flush(timeout=WAIT).complete
    assert sorted(plugin.delivered) == sorted(accepted)


# -- the file deleted or replaced while the router runs -------------------------------------


def test_an_outbox_deleted_while_running_refuses_new_events(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    plugin = Instant(up=False)  # what is accepted stays in the outbox
    router = make_router(path, plugin)
    try:
        for i in range(5):
            router.send(track(i))
        router.flush(timeout=0)  # moved from the spool into the file: they are stranded there
        with structlog.testing.capture_logs() as logs:
            path.unlink()
            past_the_check()
            with pytest.raises(OutboxUnavailableError) as caught:
                router.send(track(99))
        message = str(caught.value)
        assert f"the outbox {path} was deleted or moved away while the router" in message
        assert "new events are refused" in message
        assert "restart the process" in message
        (lost,) = [e for e in logs if e["event"] == "outbox_file_lost"]
        assert lost["log_level"] == "error"
        assert lost["stranded_events"] == 5
        assert "5 event(s) accepted before are only in the deleted file" in lost["note"]
        with pytest.raises(OutboxUnavailableError, match="was deleted"):
            router.flush(timeout=WAIT)  # an error, not a wait for rows nobody may claim
        with pytest.raises(OutboxUnavailableError, match="was deleted"):
            router.outbox.stats(time.time())  # type: ignore[union-attr]
        assert not path.exists()  # no new file made behind the app's back
    finally:
        router.close()  # closes without raising
    assert plugin.delivered == []


def test_an_outbox_replaced_while_running_is_left_to_the_new_file(tmp_path: Path) -> None:
    """A backup moved over the outbox of a running router: the router stops using the path,
    and the backup reads as itself, not mixed with the running router's write-ahead log."""
    path = tmp_path / "outbox.db"
    backup = tmp_path / "backup.db"
    with make_router(backup, Instant(up=False), close_timeout=0) as earlier:
        kept = earlier.send(track(0)).message_id
    plugin = Instant(up=False)
    router = make_router(path, plugin)
    try:
        for i in range(50):
            router.send(track(i))
        router.flush(timeout=0)  # moved from the spool into the file being replaced
        os.replace(backup, path)
        past_the_check()
        with pytest.raises(OutboxUnavailableError) as caught:
            router.send(track(99))
        assert f"the outbox {path} was replaced by another file" in str(caught.value)
        plugin.up.set()  # the worker would deliver now, were it still using the file
        with pytest.raises(OutboxUnavailableError, match="was replaced"):
            router.flush(timeout=WAIT)
        restored = SQLiteOutbox(path)
        try:
            assert restored.stats(time.time()).events == 1
        finally:
            restored.close()
    finally:
        router.close()
    assert plugin.delivered == []
    plugin = Instant()
    with make_router(path, plugin) as reopened:
        assert reopened.flush(timeout=WAIT).complete
    assert plugin.delivered == [kept]


def test_an_outbox_moved_away_and_back_resumes(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    aside = tmp_path / "aside.db"
    plugin = Instant(up=False)
    with make_router(path, plugin) as router:
        accepted = [router.send(track(i)).message_id for i in range(3)]
        path.rename(aside)
        past_the_check()
        with pytest.raises(OutboxUnavailableError, match="was deleted"):
            router.send(track(3))
        aside.rename(path)
        past_the_check()
        accepted.append(router.send(track(4)).message_id)
        plugin.up.set()
        assert router.flush(timeout=WAIT).complete
    assert sorted(plugin.delivered) == sorted(accepted)


# -- a full disk ----------------------------------------------------------------------------


def test_a_full_database_refuses_new_events_and_recovers(tmp_path: Path) -> None:
    """SQLite's ``max_page_count`` fills the database as a full disk would (SQLITE_FULL)."""
    path = tmp_path / "outbox.db"
    plugin = Instant(up=False)
    with make_router(path, plugin) as router:
        outbox = sqlite_of(router.outbox)
        accepted = [router.send(track(i)).message_id for i in range(10)]
        router.flush(timeout=0)  # the spool moved into the file: its size is what is capped
        pages(outbox, limit=pages(outbox) + 2)
        refused = send_until_refused(router, accepted)
        assert isinstance(refused, RouterError)
        message = str(refused)
        assert f"the disk holding the outbox {path} is full" in message
        assert "The event was not accepted" in message
        assert "accepts events again by itself" in message
        with pytest.raises(OutboxDiskFullError):
            router.send(track(0))
        # Everything accepted is kept (stats() counts what is still spooled too).
        assert router.outbox is not None
        assert router.outbox.stats(time.time()).events == len(accepted)
        pages(outbox, limit=1_000_000)  # room again
        accepted.append(router.send(track(1)).message_id)  # accepted at once
        plugin.up.set()
        assert router.flush(timeout=WAIT).complete
    assert Counter(plugin.delivered).keys() == set(accepted)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "disk") as where:
        yield where


def test_a_nearly_full_disk_refuses_new_events_and_delivery_goes_on(disk: Path) -> None:
    plugin = Instant()
    ballast = fill(disk, leave=2 * 1024**2)
    with make_router(disk / "outbox.db", plugin) as router:
        accepted: list[str] = []
        refused = send_until_refused(router, accepted)
        message = str(refused)
        assert f"the disk holding the outbox {disk / 'outbox.db'} has" in message
        assert "kept free so that delivery can go on" in message
        assert router.flush(timeout=WAIT).complete  # acknowledging and checkpointing still work
        ballast.unlink()
        accepted.append(router.send(track(1)).message_id)  # room again: accepted at once
        assert router.flush(timeout=WAIT).complete
    assert set(plugin.delivered) == set(accepted)


def test_sending_through_a_full_disk_never_wedges_delivery(disk: Path) -> None:
    """An app that keeps sending while a backlog fills the disk, and after the destination is
    back: new events must not take the room the workers need to acknowledge and checkpoint,
    or delivery stops for good."""
    plugin = Instant(up=False)
    fill(disk, leave=3 * 1024**2)
    accepted: list[str] = []
    refused = threading.Event()
    stop = threading.Event()

    def keep_sending(router: Router) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                accepted.append(router.send(track(i)).message_id)
            except OutboxDiskFullError:
                refused.set()
                time.sleep(0.001)

    with make_router(disk / "outbox.db", plugin) as router:
        sender = threading.Thread(target=keep_sending, args=(router,))
        sender.start()
        try:
            assert refused.wait(WAIT), "the backlog never filled the disk"
            plugin.up.set()
            for _ in range(5):  # each flush covers what was accepted before it
                assert router.flush(timeout=WAIT).complete
        finally:
            stop.set()
            sender.join()
        assert router.flush(timeout=WAIT).complete
    assert set(plugin.delivered) == set(accepted)


def test_sqlite_hitting_a_full_disk_keeps_what_was_accepted_and_recovers(
    disk: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the free-space check off, SQLite itself runs into the full disk (SQLITE_FULL) in
    send() and in the workers' writes; all of it comes back once space returns."""
    monkeypatch.setattr(sqlite_module, "room", lambda path: None)
    plugin = Instant(up=False)  # the workers' claims and retries write to the full disk too
    ballast = fill(disk, leave=1024**2)
    with make_router(disk / "outbox.db", plugin) as router:
        accepted: list[str] = []
        refused = send_until_refused(router, accepted)
        assert "(SQLite: database or disk is full)" in str(refused)
        assert accepted
        with pytest.raises(OutboxDiskFullError):
            router.send(track(0))
        ballast.unlink()
        plugin.up.set()
        assert router.flush(timeout=WAIT).complete
        accepted.append(router.send(track(1)).message_id)
        assert router.flush(timeout=WAIT).complete
    assert set(plugin.delivered) == set(accepted)


# -- the write-ahead log --------------------------------------------------------------------


def test_the_write_ahead_log_stays_small_once_events_are_delivered(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    plugin = Instant()
    with make_router(path, plugin, flush_interval=0.5) as router:
        accepted = [router.send(track(i)).message_id for i in range(10_000)]
        assert router.flush(timeout=WAIT).complete
        wal = Path(f"{path}-wal").stat().st_size
        assert wal < 8 * 1024**2, f"the write-ahead log is {wal:,} bytes after delivery"
    assert sorted(plugin.delivered) == sorted(accepted)
