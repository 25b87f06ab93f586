"""A per-process spool in front of a durable outbox: ``send()`` costs one ``write(2)``.

Committing one row to SQLite takes about 15 µs of the caller's time; appending one line to a
file takes about 2. So ``send()`` appends the event to this process's *spool file* (durable
the moment ``write()`` returns: the kernel keeps it if the process is killed, exactly what
SQLite's ``synchronous = "normal"`` promises) and keeps it in memory; a mover thread moves what
has gathered into the outbox every few milliseconds, hundreds of events in one transaction
(``BulkOutbox.enqueue_many``), then deletes the spool file those events were in.

Every read (``claim``, ``pending``, ``stats``, ``high_water`` ...) moves the spool first, so
that whoever reads sees every event accepted before the call: a ``flush()`` waits for them, a
worker claims them. When moving fails (the disk is full, the file was lost), reads still count
the events waiting in the spool, and ``send()`` takes the outbox's own ``enqueue()`` until a
move goes through again, so every refusal reads exactly as without a spool.

**Files.** Each process writes ``<outbox>.spool/<pid>-<tag>-<n>.spool``, a new one after each
move, holding an exclusive ``flock`` on it until the file is deleted (a file is made as
``….spool.new``, locked, then renamed, so that it is never seen unlocked). A file whose lock can be
taken belongs to a process that died (the kernel drops a dead process's locks, SIGKILL
included): any router or worker opening the outbox, and every running one about once a
second, moves such files into the outbox. One line per event: a CRC-32 of the rest, the
accept time, the destinations (JSON) and the event's JSON, separated by tabs (JSON strings
never hold a raw tab or newline). A line cut short or damaged is skipped and logged.

**Limits.** ``max_events`` and ``max_bytes`` are checked against the outbox's totals as last
read plus what this process has spooled; when an event would pass a limit, the spool is moved
and the outbox's own exact check decides. Processes sharing one outbox may pass a limit by what
the others have spooled and not moved yet (a few milliseconds of their events).

**Exactly once, nearly.** A process killed after the outbox committed a move and before the
spool file was deleted (a window of microseconds) leaves those events in both: they are moved
again on recovery and delivered twice, with the same ``message_id``, which both vendors
deduplicate on.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from router_core.errors import OutboxDiskFullError, OutboxUnavailableError, RouterError
from router_core.limits import BatchLimits
from router_core.logs import get_logger
from router_core.outbox.forwarding import ForwardingOutbox
from router_core.outbox.store import (
    AcceptedEvent,
    BulkOutbox,
    ClaimedRow,
    ForkLocks,
    OutboxStats,
    StoredEvent,
    routes_json,
)

__all__ = ["MOVE_INTERVAL_S", "SpooledOutbox", "spool_directory"]

log = get_logger("event_router.outbox")

MOVE_INTERVAL_S = 0.005
"""How long the mover lets events gather after the first one before moving them."""

_RETRY_PAUSE_S = 0.2  # after a failed move, before the mover tries again
_RECOVER_EVERY_S = 1.0  # how often a running process looks for dead processes' spool files
_MAX_SPOOLED = 5_000  # events in memory before send() moves them itself (backpressure)
_JOIN_S = 2.0  # close(): how long to wait for the mover to see it is closed
_RECOVER_CHUNK = 5_000  # events per transaction when moving a dead process's file
_SUFFIX = ".spool"
_MAKING = ".new"  # a spool file's name until it is locked


def spool_directory(outbox_path: Path) -> Path:
    """Where the processes using the outbox at ``outbox_path`` keep their spool files."""
    return outbox_path.with_name(outbox_path.name + ".spool")


class _Segment:
    """One spool file, open for appending, locked by this process until it is deleted."""

    __slots__ = ("fd", "path", "size")

    def __init__(self, path: Path) -> None:
        # Made under another name, locked, then renamed: recovery, which takes any *.spool
        # file whose lock is free, never finds one between its creation and its lock.
        making = path.with_name(path.name + _MAKING)
        self.path = path
        self.fd = os.open(making, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(making, path)
        except OSError:
            os.close(self.fd)
            with contextlib.suppress(OSError):
                os.unlink(making)
            raise
        self.size = 0

    def append(self, line: bytes) -> None:
        try:
            written = os.write(self.fd, line)
        except OSError as exc:
            self._cut_back()
            raise _spool_error(self.path, exc) from exc
        self.size += written
        if written != len(line):  # a short write: the disk filled up mid-line
            self.size -= written
            self._cut_back()
            raise _spool_error(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    def _cut_back(self) -> None:
        """Drop a partial line, so that the next event starts on a line of its own."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, self.size)

    def delete(self) -> None:
        """Unlink, then unlock (by closing): nobody can take the file while it still exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)


def _spool_error(path: Path, exc: OSError) -> OutboxUnavailableError:
    consequence = "The event was not accepted; events accepted earlier are kept."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutboxDiskFullError(
            f"the disk holding the outbox spool {path.parent} is full ({exc.strerror}). "
            f"{consequence} Free space on that disk: send() accepts events again by itself "
            "once there is room.",
            path=str(path.parent),
        )
    return OutboxUnavailableError(
        f"the outbox spool file {path} cannot be written: {exc.strerror or exc}. {consequence}",
        path=str(path.parent),
    )


class SpooledOutbox(ForwardingOutbox[BulkOutbox]):
    """An ``Outbox`` that accepts events into a per-process spool file and moves them into
    ``inner`` in bulk. Reads go to ``inner`` once the spool is moved; the rest as they are."""

    def __init__(
        self, inner: BulkOutbox, directory: Path, *, move_interval: float | None = None
    ) -> None:
        super().__init__(inner)
        self._dir = directory
        self._interval = MOVE_INTERVAL_S if move_interval is None else move_interval
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            inner.close()
            raise OutboxUnavailableError(
                f"the outbox spool directory {directory} cannot be created: {exc.strerror or exc}",
                path=str(directory),
            ) from exc
        self._tag = uuid.uuid4().hex[:8]
        self._seq = 0
        self._lock = threading.Lock()  # the records and the segments
        self._move_lock = threading.Lock()  # one move at a time
        self._records: list[AcceptedEvent] = []
        self._bytes = 0
        self._segments: list[_Segment] = []  # files holding self._records; the last is open
        self._moving = (0, 0)  # (events, bytes) taken by a move not committed yet
        self._totals = (0, 0)  # the outbox's stored totals as last read
        self._failing = False  # the last move failed: send() takes inner.enqueue()
        self._on_stored: list[Callable[[Sequence[AcceptedEvent]], None]] = []
        self._wake = threading.Event()
        self._mover: threading.Thread | None = None
        self._next_recovery = 0.0
        self._closed = False
        self._fork_locks = ForkLocks()
        self.recover()
        self._totals = inner.stored_totals()

    @property
    def spooled(self) -> int:
        """Events accepted by this process and not yet in the outbox."""
        return len(self._records) + self._moving[0]

    # -- accepting ------------------------------------------------------------------------------

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
        size = len(payload) if payload.isascii() else len(payload.encode())
        if not self._failing and self.inner.healthy():
            key = tuple(destinations)
            body = f"{now!r}\t{routes_json(key)}\t{payload}".encode()
            line = b"%08x\t%s\n" % (zlib.crc32(body), body)
            with self._lock:
                stored_events, stored_bytes = self._totals
                moving_events, moving_bytes = self._moving
                fits = (
                    max_events is None
                    or stored_events + moving_events + len(self._records) < max_events
                ) and (
                    max_bytes is None
                    or stored_bytes + moving_bytes + self._bytes + size <= max_bytes
                )
                if fits and len(self._records) < _MAX_SPOOLED and not self._closed:
                    try:
                        if not self._segments:
                            self._segments.append(self._new_segment())
                        self._segments[-1].append(line)
                    except OutboxUnavailableError as exc:  # the spool's disk: the outbox decides
                        log.debug("outbox_spool_write_failed", error=str(exc))
                    else:
                        self._records.append(AcceptedEvent(message_id, payload, key, now))
                        self._bytes += size
                        if len(self._records) == 1:
                            self._wake_mover()
                        return None
        # Near a limit, a storage problem, a spool file that cannot be written, a move that
        # failed, or more spooled than the mover keeps up with: what is spooled goes into the
        # outbox if it can, and the outbox's own enqueue() decides about this event (and words
        # any refusal) exactly as without a spool. Spooled events that cannot move stay spooled.
        self._try_move()
        full = self.inner.enqueue(
            message_id, payload, destinations, now=now, max_events=max_events, max_bytes=max_bytes
        )
        if full is None:
            self._stored((AcceptedEvent(message_id, payload, tuple(destinations), now),))
        return full

    def notify_stored(self, callback: Callable[[Sequence[AcceptedEvent]], None]) -> None:
        """Call ``callback`` with the events of each move once they are in the outbox."""
        self._on_stored.append(callback)

    def _stored(self, events: Sequence[AcceptedEvent]) -> None:
        for callback in self._on_stored:
            try:
                callback(events)
            except Exception as exc:  # a hint lost costs a worker one flush_interval, no more
                log.error("outbox_spool_notify_failed", error=f"{type(exc).__name__}: {exc}")

    def _new_segment(self) -> _Segment:
        self._seq += 1
        path = self._dir / f"{os.getpid()}-{self._tag}-{self._seq:08d}{_SUFFIX}"
        try:
            return _Segment(path)
        except OSError as exc:
            raise _spool_error(path, exc) from exc

    def _wake_mover(self) -> None:
        """Under ``self._lock``: the first event since a move starts the mover's clock."""
        if self._mover is None or not self._mover.is_alive():
            self._mover = threading.Thread(
                target=self._run_mover, name="event-router-outbox-spool", daemon=True
            )
            self._mover.start()
        self._wake.set()

    # -- moving ---------------------------------------------------------------------------------

    def _run_mover(self) -> None:
        while not self._closed:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(self._interval)  # let a batch gather
            self._wake.clear()
            if self._closed:  # close() moved what was left
                return
            try:
                self.move()
            except RouterError as exc:
                log.debug("outbox_spool_move_failed", error=f"{type(exc).__name__}: {exc}")
                time.sleep(_RETRY_PAUSE_S)
                self._wake.set()
            except Exception as exc:
                log.error("outbox_spool_move_failed", error=f"{type(exc).__name__}: {exc}")
                time.sleep(_RETRY_PAUSE_S)
                self._wake.set()

    def move(self) -> int:
        """Move everything spooled into the outbox now; return how many events went.

        On failure the events stay spooled (in memory and in their files) and the error is
        raised; ``send()`` then goes through the outbox's own ``enqueue()`` until a move
        succeeds.
        """
        with self._move_lock:
            moved = self._move()
        self._stored(moved)
        return len(moved)

    def _move(self) -> list[AcceptedEvent]:
        """``move()``'s work, under ``self._move_lock``; returns the events moved."""
        with self._lock:
            records, self._records = self._records, []
            segments, self._segments = self._segments, []
            self._moving = (len(records), self._bytes)
            self._bytes = 0
        if not records:
            self._close_segments(segments)  # at most an empty file opened for nothing
            self._moving = (0, 0)
            return records
        try:
            self.inner.enqueue_many(records)
        except BaseException:
            with self._lock:  # back in front of what came meanwhile, files and all
                self._records[:0] = records
                self._segments[:0] = segments
                self._bytes += self._moving[1]
                self._moving = (0, 0)
                self._failing = True
            raise
        self._failing = False
        self._close_segments(segments)
        with contextlib.suppress(RouterError):
            self._totals = self.inner.stored_totals()
        self._moving = (0, 0)
        return records

    @staticmethod
    def _close_segments(segments: Sequence[_Segment]) -> None:
        for segment in segments:
            segment.delete()

    def _try_move(self) -> None:
        """Move before a call (or wait for the mover's move); a failure is left for later."""
        if self._records or self._moving[0]:
            with contextlib.suppress(RouterError):
                self.move()

    @contextmanager
    def _settled(self) -> Iterator[list[AcceptedEvent]]:
        """For a read: move what can be moved, then hold moves back while the read looks at
        the outbox; yields the events still spooled (a move failed), which it counts too."""
        moved: list[AcceptedEvent] = []
        with self._move_lock:
            if self._records:
                with contextlib.suppress(RouterError):
                    moved = self._move()
            with self._lock:
                left = list(self._records)
            yield left
        if moved:
            self._stored(moved)

    # -- recovery -------------------------------------------------------------------------------

    def recover(self) -> int:
        """Move the spool files of processes that died into the outbox; return the events."""
        self._next_recovery = time.monotonic() + _RECOVER_EVERY_S
        moved = 0
        try:
            names = sorted(self._dir.iterdir())
        except OSError:
            return 0
        for path in names:
            if path.name.endswith(_SUFFIX):
                moved += self._recover_file(path)
            elif path.name.endswith(_SUFFIX + _MAKING):
                _remove_abandoned(path)
        return moved

    def _recover_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            return 0  # gone meanwhile (its owner moved it), or not ours to read
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return 0  # its process is alive (or it is one of ours)
            try:
                if os.fstat(fd).st_ino != os.stat(path).st_ino:
                    return 0  # deleted by its owner between our open and our lock
            except FileNotFoundError:
                return 0
            with os.fdopen(os.dup(fd), "rb") as file:
                data = file.read()
            events, damaged = _parse(data)
            for start in range(0, len(events), _RECOVER_CHUNK):
                self.inner.enqueue_many(events[start : start + _RECOVER_CHUNK])
                self._stored(events[start : start + _RECOVER_CHUNK])
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        finally:
            os.close(fd)
        (log.warning if events or damaged else log.debug)(
            "outbox_spool_recovered",
            file=str(path),
            events=len(events),
            damaged_lines=damaged,
            note="events a process accepted before it died, moved into the outbox",
        )
        return len(events)

    # -- delivering: every read sees the spool moved first --------------------------------------

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
        self._try_move()
        return self.inner.claim(
            destination,
            limits=limits,
            batch_size=batch_size,
            token=token,
            now=now,
            lease_until=lease_until,
            schedule_horizon=schedule_horizon,
            lease_horizon=lease_horizon,
            max_in_flight=max_in_flight,
        )

    def pending(self, destinations: Sequence[str], up_to: int | None = None) -> dict[str, int]:
        with self._settled() as left:
            counts = self.inner.pending(destinations, up_to)
        for name, spooled in _per_destination(left, destinations).items():
            counts[name] = counts.get(name, 0) + spooled
        return counts

    def any_pending(self, destinations: Sequence[str], up_to: int | None = None) -> bool:
        with self._settled() as left:
            if any(_per_destination(left, destinations).values()):
                return True
            return self.inner.any_pending(destinations, up_to)

    def high_water(self) -> int:
        with self._settled():
            return self.inner.high_water()

    def stats(self, now: float) -> OutboxStats:
        with self._settled() as records:
            stats = self.inner.stats(now)
        if not records:
            return stats
        counts = {name: dict(states) for name, states in stats.counts.items()}
        for record in records:
            for name in record.destinations:
                per = counts.setdefault(name, {})
                per["pending"] = per.get("pending", 0) + 1
        oldest = min(r.accepted_at for r in records)
        return OutboxStats(
            counts=counts,
            events=stats.events + len(records),
            bytes=stats.bytes + sum(len(r.payload.encode()) for r in records),
            oldest_pending=oldest
            if stats.oldest_pending is None
            else min(oldest, stats.oldest_pending),
            dead_tuples=stats.dead_tuples,
            workers=stats.workers,
        )

    def purge(self, *, dead_only: bool, destination: str | None) -> int:
        with self._settled():
            return self.inner.purge(dead_only=dead_only, destination=destination)

    def export(self, after: int, limit: int) -> list[StoredEvent]:
        with self._settled():
            return self.inner.export(after, limit)

    # -- housekeeping ---------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """The outbox's own housekeeping, and now and then the spools of dead processes."""
        if time.monotonic() >= self._next_recovery:
            self.recover()
        self.inner.checkpoint()

    # -- fork -------------------------------------------------------------------------------------

    def before_fork(self) -> None:
        self._fork_locks.hold(self._move_lock, self._lock)
        self.inner.before_fork()

    def after_fork_in_parent(self) -> None:
        self.inner.after_fork_in_parent()
        self._fork_locks.release()

    def after_fork_in_child(self) -> None:
        # The records and their files are the parent's: it moves them. The child closes its
        # copies of the descriptors (the parent's locks stay) and starts a spool of its own.
        self._fork_locks.forget()
        for segment in self._segments:
            with contextlib.suppress(OSError):
                os.close(segment.fd)
        self._segments = []
        self._records = []
        self._bytes = 0
        self._moving = (0, 0)
        self._lock = threading.Lock()
        self._move_lock = threading.Lock()
        self._wake = threading.Event()
        self._mover = None
        self._tag = uuid.uuid4().hex[:8]
        self.inner.after_fork_in_child()

    def close(self) -> None:
        """Move what is spooled (what cannot be moved stays in its file for the next process
        that opens the outbox), stop the mover, close the outbox. Safe to call twice."""
        if not self._closed:
            try:
                self.move()
            except RouterError as exc:
                log.warning(
                    "outbox_spool_left",
                    events=self.spooled,
                    directory=str(self._dir),
                    error=str(exc),
                    note="moved into the outbox by the next router or worker that opens it",
                )
            self._closed = True
            self._wake.set()
            mover = self._mover
            if mover is not None and mover is not threading.current_thread():
                mover.join(_JOIN_S)
            with self._lock:
                segments, self._segments = self._segments, []
            for segment in segments:  # kept on disk (for recovery) when they hold events
                if self._records:
                    os.close(segment.fd)
                else:
                    segment.delete()
        self.inner.close()


def _remove_abandoned(path: Path) -> None:
    """A file a process was still making when it died (it holds no event): delete it, once
    its lock shows nobody is making it now."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.unlink(path)
    except OSError:
        pass  # being made right now, or gone already
    finally:
        os.close(fd)


def _parse(data: bytes) -> tuple[list[AcceptedEvent], int]:
    """The events in a spool file's contents, and how many lines were damaged."""
    events: list[AcceptedEvent] = []
    damaged = 0
    for line in _lines(data):
        try:
            crc, body = line.split(b"\t", 1)
            if int(crc, 16) != zlib.crc32(body):
                raise ValueError("checksum")
            accepted_at, routes, payload = body.decode().split("\t", 2)
            destinations = tuple(json.loads(routes))
            message_id = json.loads(payload)["message_id"]
            events.append(AcceptedEvent(message_id, payload, destinations, float(accepted_at)))
        except (ValueError, KeyError, TypeError):
            damaged += 1
    return events, damaged


def _lines(data: bytes) -> Iterator[bytes]:
    """Complete lines only: a last line without its newline was never accepted."""
    lines = data.split(b"\n")
    yield from (line for line in lines[:-1] if line)


def _per_destination(events: Sequence[AcceptedEvent], names: Sequence[str]) -> dict[str, int]:
    """How many of ``events`` go to each of ``names``."""
    counts = dict.fromkeys(names, 0)
    for event in events:
        for name in event.destinations:
            if name in counts:
                counts[name] += 1
    return counts
