"""The outbox file in trouble: what went wrong, in words a user can act on.

SQLite reports trouble with its file in its own terms (``file is not a database``, ``unable
to open database file``, ``attempt to write a readonly database``). ``explain()`` looks at the
file, its directory and its disk to find the cause, and returns an ``OutboxUnavailableError``
(``OutboxDiskFullError`` for a full disk) that names the path and says what to do.
``check_location()`` refuses a path that can never hold an outbox before SQLite opens it.
``identity()`` and ``room()`` are the cheap looks the outbox takes now and then to notice
what SQLite does not: its file deleted or renamed over while open, the disk filling up.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

from router_core.errors import OutboxDiskFullError, OutboxUnavailableError
from router_core.settings.queue import path_problem

__all__ = ["DELIVERY_RESERVE_BYTES", "check_location", "explain", "identity", "room"]

DELIVERY_RESERVE_BYTES = 16 * 1024**2
"""Free disk kept for the workers (acknowledgments, checkpoints), beyond the write-ahead
log's size; at most 1/20 of a small file system."""

_BUSY_TIMEOUT_S = 15.0  # keep in step with sqlite.py: how long a statement waits for a lock
_NEARLY_FULL_BYTES = 64 * 1024  # an I/O error with less free than this is a full disk

_CODES = {
    name: getattr(sqlite3, name)
    for name in (
        "SQLITE_PERM",
        "SQLITE_BUSY",
        "SQLITE_LOCKED",
        "SQLITE_READONLY",
        "SQLITE_IOERR",
        "SQLITE_CORRUPT",
        "SQLITE_FULL",
        "SQLITE_CANTOPEN",
        "SQLITE_AUTH",
        "SQLITE_NOTADB",
    )
}


def identity(path: Path) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of the file at ``path`` now, or ``None`` when there is none."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_dev, info.st_ino


def room(path: Path) -> tuple[int, int] | None:
    """``(free, needed)`` bytes on the disk holding the outbox at ``path``.

    ``needed`` is what must stay free for delivery to go on: room for a checkpoint to copy the
    whole write-ahead log into the database (its current size), plus the workers' own writes.
    ``None`` when the file system does not say (``statvfs`` reports no size).
    """
    try:
        disk = os.statvfs(path.parent)
    except OSError:
        return None
    total = disk.f_blocks * disk.f_frsize
    if total <= 0:
        return None
    try:
        wal = os.stat(f"{path}-wal").st_size
    except OSError:
        wal = 0
    return disk.f_bavail * disk.f_frsize, wal + min(DELIVERY_RESERVE_BYTES, total // 20)


def check_location(path: Path) -> None:
    """Raise ``OutboxUnavailableError`` when ``path`` can never hold an outbox.

    The settings refuse such a path when they are read (``path_problem``); this asks again
    when the outbox opens, since the file system may have changed in between.
    """
    problem = path_problem(path)
    if problem is not None:
        raise _error(
            path,
            f"the outbox path cannot be used: {problem}",
            "Point [queue] path at a file in a directory: an outbox is created where none exists.",
        )


def explain(path: Path, exc: BaseException, consequence: str = "") -> OutboxUnavailableError:
    """``exc`` (a ``sqlite3.Error`` or ``OSError`` from using the outbox at ``path``) as an
    error naming the path, the cause and what to do; ``consequence`` (a sentence) goes
    between the cause and the advice."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    number = exc.errno if isinstance(exc, OSError) else None
    detail = _detail(exc)
    if (
        primary == _CODES["SQLITE_FULL"]
        or number == errno.ENOSPC
        or (primary == _CODES["SQLITE_IOERR"] and _disk_is_full(path))
    ):
        return _error(
            path,
            f"the disk holding the outbox {path} is full ({detail})",
            "Free space on that disk: the outbox accepts events again by itself once there "
            "is room.",
            consequence,
            full=True,
        )
    if code == sqlite3.SQLITE_READONLY_DBMOVED:
        return _error(
            path,
            f"the outbox {path} was moved or deleted while it was open ({detail})",
            "Restart the process.",
            consequence,
        )
    if primary in (_CODES["SQLITE_READONLY"], _CODES["SQLITE_PERM"], _CODES["SQLITE_AUTH"]) or (
        number in (errno.EROFS, errno.EACCES, errno.EPERM)
    ):
        return _not_writable(path, detail, consequence)
    if primary == _CODES["SQLITE_CANTOPEN"]:
        return _cannot_open(path, detail, consequence)
    if primary == _CODES["SQLITE_NOTADB"]:
        return _error(
            path,
            f"the file {path} is not an event-router outbox, nor any SQLite database ({detail})",
            "Move it away, or point [queue] path at another file: an outbox is created where "
            "none exists.",
            consequence,
        )
    if primary == _CODES["SQLITE_CORRUPT"]:
        return _error(
            path,
            f"the outbox {path} is damaged ({detail})",
            f"Move it aside together with {path.name}-wal ('sqlite3 FILE .recover' may save "
            "its events) and restart: a new, empty outbox is created.",
            consequence,
        )
    if primary in (_CODES["SQLITE_BUSY"], _CODES["SQLITE_LOCKED"]):
        return _error(
            path,
            f"the outbox {path} stayed locked by another connection for more than "
            f"{_BUSY_TIMEOUT_S:g}s ({detail})",
            "Another process keeps a write transaction open on it: stop that process, or give "
            "each application its own [queue] path.",
            consequence,
        )
    if primary == _CODES["SQLITE_IOERR"]:
        if _read_only_part(path) is not None:  # made read-only while open: writes fail (EPERM)
            return _not_writable(path, detail, consequence)
        return _error(
            path,
            f"reading or writing the outbox {path} failed ({detail})",
            "Check the disk and its file system (dmesg): the outbox resumes once the I/O errors "
            "stop.",
            consequence,
        )
    if number in (errno.ENOTDIR, errno.EEXIST):
        blocker = _file_in_the_way(path)
        if blocker is not None:
            return _blocked(path, blocker, consequence)
    if isinstance(exc, OSError):
        return _error(
            path,
            f"the outbox {path} cannot be used ({detail})",
            "Check the path and its permissions.",
            consequence,
        )
    return _error(
        path,
        f"the outbox {path} failed ({detail})",
        "If this persists, move the file aside and restart (a new outbox is created).",
        consequence,
    )


def _read_only_part(path: Path) -> Path | None:
    """The outbox file, its ``-wal`` or ``-shm`` file, that exists and cannot be written."""
    for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if part.exists() and not os.access(part, os.W_OK):
            return part
    return None


def _not_writable(path: Path, detail: str, consequence: str) -> OutboxUnavailableError:
    directory = path.parent
    part = _read_only_part(path)
    if part is not None:
        which = f"the outbox {path}" if part == path else f"{part}, part of the outbox {path},"
        return _error(
            path,
            f"{which} is read-only for this process ({detail})",
            "Make the file writable (its owner, mode and attributes: ls -l, lsattr; or the "
            "mount), or point [queue] path at a writable file.",
            consequence,
        )
    if not os.access(directory, os.W_OK):
        return _read_only_directory(path, detail, consequence)
    return _error(
        path,
        f"the outbox {path} could not be written ({detail})",
        f"Check that the file, {path.name}-wal and {path.name}-shm beside it, and {directory} "
        "are writable by this process.",
        consequence,
    )


def _blocked(path: Path, blocker: Path, consequence: str) -> OutboxUnavailableError:
    """A file stands where a directory of the outbox's path must be."""
    return _error(
        path,
        f"the outbox {path} cannot be created: {blocker} is a file, not a directory",
        f"Point [queue] path at a file in a directory, or move {blocker} away.",
        consequence,
    )


def _cannot_open(path: Path, detail: str, consequence: str) -> OutboxUnavailableError:
    blocker = _file_in_the_way(path)
    if blocker is not None:
        return _blocked(path, blocker, consequence)
    if not path.parent.is_dir():
        return _error(
            path,
            f"the directory of the outbox {path} does not exist ({detail})",
            f"Create {path.parent}, or point [queue] path at an existing directory.",
            consequence,
        )
    if not os.access(path.parent, os.W_OK):
        return _read_only_directory(path, detail, consequence)
    if path.exists() and not os.access(path, os.R_OK):
        return _error(
            path,
            f"the outbox {path} cannot be read by this process ({detail})",
            "Make it readable and writable by this process, or point [queue] path elsewhere.",
            consequence,
        )
    return _error(
        path,
        f"SQLite cannot open the outbox {path} ({detail})",
        f"Check that the file, {path.name}-wal and {path.name}-shm beside it, and "
        f"{path.parent} are readable and writable by this process.",
        consequence,
    )


def _read_only_directory(path: Path, detail: str, consequence: str) -> OutboxUnavailableError:
    return _error(
        path,
        f"the directory {path.parent} of the outbox {path} is read-only for this process, and "
        f"SQLite must create {path.name}-wal and {path.name}-shm in it ({detail})",
        f"Make {path.parent} writable (its owner, mode and attributes, or the mount), or point "
        "[queue] path at a writable directory.",
        consequence,
    )


def _error(
    path: Path, problem: str, advice: str, consequence: str = "", *, full: bool = False
) -> OutboxUnavailableError:
    message = f"{problem}. {consequence + ' ' if consequence else ''}{advice}"
    kind = OutboxDiskFullError if full else OutboxUnavailableError
    return kind(message, path=str(path))


def _detail(exc: BaseException) -> str:
    if isinstance(exc, sqlite3.Error):
        return f"SQLite: {exc}"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return f"{type(exc).__name__}: {exc}"


def _disk_is_full(path: Path) -> bool:
    free = room(path)
    return free is not None and free[0] < _NEARLY_FULL_BYTES


def _file_in_the_way(path: Path) -> Path | None:
    """The nearest ancestor of ``path`` that exists, when it is not a directory."""
    for ancestor in path.parents:
        try:
            info = os.stat(ancestor)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
        return None if stat.S_ISDIR(info.st_mode) else ancestor
    return None
