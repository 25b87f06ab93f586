"""Which outbox engines exist: the ``event_router.outbox`` entry-point group.

Each entry point is named after the backend (what ``[queue] backend`` says) and loads an
``OutboxBackend``: the factory that opens the outbox from the ``[queue]`` settings, and the
URL schemes whose ``[queue] url`` selects it. Our own engines are registered through the same
group (pyproject.toml); in a source checkout without installed metadata the in-tree table
``BUILT_IN`` stands in for them. Another package adds an engine with no change here::

    [project.entry-points."event_router.outbox"]
    redis = "event_router_redis:BACKEND"   # OutboxBackend(open_redis, schemes=("redis",))

Nothing here imports an engine: factories import theirs when called, so that PostgreSQL's
optional driver is only needed by those who use it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

from router_core.errors import ConfigError
from router_core.logs import get_logger

if TYPE_CHECKING:  # settings import this module lazily, and the engines import settings
    from router_core.outbox.store import Outbox
    from router_core.settings.queue import QueueSettings

__all__ = [
    "BUILT_IN",
    "ENTRY_POINT_GROUP",
    "OutboxBackend",
    "available_backends",
    "backend_for_scheme",
    "get_backend",
    "schemes",
    "unknown_backend",
]

ENTRY_POINT_GROUP = "event_router.outbox"

log = get_logger("event_router.outbox")


@dataclass(frozen=True, slots=True)
class OutboxBackend:
    """An outbox engine: ``open(settings)`` returns a new ``Outbox`` (creating its storage when
    missing, raising a ``RouterError`` naming what is wrong otherwise).

    ``schemes``: the URL schemes (lowercase, without ``://``) that select this backend from
    ``[queue] url``. ``needs_url``: the backend cannot work without ``url``. ``durable``:
    whether what it stores outlives the process (sets the default ``max_bytes``: 1 GiB, or
    64 MiB in memory). ``open_existing(settings)``: the outbox only if something already
    created it, else ``None`` (``event-router outbox status|replay|purge`` never create one);
    without it those commands use ``open``.
    """

    open: Callable[[QueueSettings], Outbox]
    schemes: tuple[str, ...] = ()
    needs_url: bool = False
    durable: bool = True
    open_existing: Callable[[QueueSettings], Outbox | None] | None = None


def _open_sqlite(settings: QueueSettings) -> Outbox:
    from router_core.outbox.spool import SpooledOutbox, spool_directory  # noqa: PLC0415
    from router_core.outbox.sqlite import SQLiteOutbox  # noqa: PLC0415

    outbox = SQLiteOutbox(settings.path, synchronous=settings.synchronous)
    # synchronous = "full" promises survival of a power cut: each send() waits for SQLite's
    # fsync then, which a spool would only have to repeat.
    if not settings.spool or settings.synchronous == "full":
        return outbox
    return SpooledOutbox(outbox, spool_directory(outbox.path))


def _open_memory(settings: QueueSettings) -> Outbox:
    from router_core.outbox.memory import MemoryOutbox  # noqa: PLC0415

    return MemoryOutbox()


def _open_postgres(settings: QueueSettings) -> Outbox:
    # psycopg is an optional extra: the import raises a ConfigError saying how to install it.
    from router_core.outbox.postgres import PostgresOutbox  # noqa: PLC0415

    assert settings.url is not None  # needs_url: QueueSettings requires it
    return PostgresOutbox(settings.url.get_secret_value(), schema=settings.schema_name)


def _existing_sqlite(settings: QueueSettings) -> Outbox | None:
    from router_core.outbox.filecheck import check_location  # noqa: PLC0415

    path = settings.path.expanduser().absolute()
    check_location(path)  # a path that can never hold one says why
    return _open_sqlite(settings) if path.exists() else None


def _existing_postgres(settings: QueueSettings) -> Outbox | None:
    from router_core.outbox.postgres import PostgresOutbox, SchemaMissingError  # noqa: PLC0415

    assert settings.url is not None
    try:
        return PostgresOutbox(
            settings.url.get_secret_value(), schema=settings.schema_name, create=False
        )
    except SchemaMissingError:
        return None


SQLITE = OutboxBackend(_open_sqlite, schemes=("sqlite",), open_existing=_existing_sqlite)
MEMORY = OutboxBackend(_open_memory, durable=False)
POSTGRES = OutboxBackend(
    _open_postgres,
    schemes=("postgresql", "postgres"),
    needs_url=True,
    open_existing=_existing_postgres,
)

BUILT_IN: Mapping[str, OutboxBackend] = {"sqlite": SQLITE, "memory": MEMORY, "postgres": POSTGRES}
"""Our engines, as pyproject.toml registers them: used for any the metadata does not list."""


@functools.cache
def available_backends() -> Mapping[str, OutboxBackend]:
    """Every registered backend by name: the entry points, then the built-ins they leave out.

    Read once per process (``available_backends.cache_clear()`` reads again). An entry point
    that fails to load, or loads something other than an ``OutboxBackend``, is logged and left
    out; the first one to claim a name or a URL scheme keeps it.
    """
    found: dict[str, OutboxBackend] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("outbox_backend_duplicate", backend=ep.name, value=ep.value)
            continue
        try:
            backend = ep.load()
        except Exception as exc:  # a broken package must not take the other backends down
            log.warning("outbox_backend_load_failed", backend=ep.name, error=f"{exc!r}")
            continue
        if not isinstance(backend, OutboxBackend):
            log.warning(
                "outbox_backend_load_failed",
                backend=ep.name,
                error=f"{ep.value} is a {type(backend).__name__}, not an OutboxBackend",
            )
            continue
        found[ep.name] = backend
    for name, backend in BUILT_IN.items():
        found.setdefault(name, backend)
    return found


def get_backend(name: str) -> OutboxBackend:
    """The backend called ``name``; a ``ConfigError`` listing the others when none is."""
    backend = available_backends().get(name)
    if backend is None:
        raise ConfigError([f"queue.backend: {unknown_backend(name)}"])
    return backend


def unknown_backend(name: str) -> str:
    """Why ``name`` is no backend: the ones there are, and the closest of them."""
    names = sorted(available_backends())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f'; did you mean "{close[0]}"?' if close else ""
    listed = ", ".join(f'"{n}"' for n in names)
    return f'no outbox backend is called "{name}" (installed: {listed}){hint}'


def backend_for_scheme(scheme: str) -> str | None:
    """The name of the backend that claims URL ``scheme``, or ``None``."""
    for name, backend in available_backends().items():
        if scheme.lower() in backend.schemes:
            return name
    return None


def schemes() -> list[str]:
    """Every URL scheme some backend claims, for messages."""
    return [s for backend in available_backends().values() for s in backend.schemes]
