"""``[queue]``: queued delivery through a durable outbox, validated."""

from __future__ import annotations

import re
import stat
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from router_core.dburl import DatabaseUrl, scheme_of, sqlite_path
from router_core.errors import ConfigError
from router_core.settings.destination import RetrySettings
from router_core.settings.problems import validation_problems

__all__ = [
    "DEFAULT_OUTBOX_PATH",
    "DEFAULT_SCHEMA",
    "SCHEMA_NAME",
    "QueueRetrySettings",
    "QueueSettings",
    "path_problem",
]

DEFAULT_OUTBOX_PATH = Path(".event-router/outbox.db")

# Used when max_bytes is not set: the disk holds a large backlog, memory a small one.
_DEFAULT_MAX_BYTES = {True: 1024**3, False: 64 * 1024**2}  # by the backend's durability

DEFAULT_SCHEMA = "event_router"
# Lowercase, so the name means the same quoted or not (psql, migrations, GRANTs).
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class QueueRetrySettings(RetrySettings):
    """How the background worker retries (``[queue.retry]``).

    The same backoff as direct sends (full jitter above ``backoff_min``, ``Retry-After`` as a
    minimum), with a larger budget because nobody is waiting: a row is dead-lettered after
    ``max_attempts`` attempts, or when it fails and was accepted (or replayed) more than
    ``max_elapsed`` seconds ago. With the defaults a destination may be down for about a day
    before events are dead-lettered.
    """

    max_attempts: int = Field(default=100, ge=1, le=10_000)
    backoff_min: float = Field(default=0.1, ge=0, allow_inf_nan=False)
    backoff_base: float = Field(default=1.0, ge=0, allow_inf_nan=False)
    backoff_max: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    retry_after_max: float = Field(default=300.0, ge=0, allow_inf_nan=False)
    max_elapsed: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)


class QueueSettings(BaseModel):
    """Queued mode: ``send()`` records the event in an outbox and a worker delivers it.

    See docs/delivery.md for every key. ``backend`` is any registered outbox engine
    (``router_core.outbox.backends``: ``sqlite``, ``memory``, ``postgres`` and those other
    packages add). ``path`` is relative to the working directory. ``url`` (``sqlite:///PATH``,
    ``postgresql://...``, or a scheme another backend claims) selects the backend by its
    scheme; ``schema`` is the PostgreSQL schema that holds the outbox's tables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    deliver: bool = True
    """False: this process only enqueues (``event-router worker`` processes deliver); no
    worker task starts in it and ``flush()`` raises ``DeliveryDisabledError``."""
    backend: str = "sqlite"
    path: Path = DEFAULT_OUTBOX_PATH
    url: DatabaseUrl | None = None
    schema_name: str = Field(default=DEFAULT_SCHEMA, alias="schema")
    synchronous: Literal["normal", "full"] = "normal"
    spool: bool = True
    """SQLite: ``send()`` appends the event to a per-process spool file (one ``write``) and a
    background thread moves it into the outbox in bulk; false commits each event to SQLite
    on ``send()``. Either way the event survives the process being killed once ``send()``
    returns (``synchronous = "full"`` never spools)."""
    batch_size: int = Field(default=500, ge=1, le=100_000)
    flush_interval: float = Field(default=0.5, gt=0, le=3600)
    concurrency: int = Field(default=10, ge=1, le=1000)
    max_events: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    when_full: Literal["block", "refuse"] = "block"
    block_timeout: float = Field(default=5.0, ge=0)
    lease: float = Field(default=60.0, gt=0)
    close_timeout: float = Field(default=10.0, ge=0)
    exit_timeout: float = Field(default=5.0, ge=0)
    retry: QueueRetrySettings = Field(default_factory=QueueRetrySettings)

    @field_validator("path")
    @classmethod
    def _usable_path(cls, value: Path) -> Path:
        problem = path_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("backend")
    @classmethod
    def _registered_backend(cls, name: str) -> str:
        if name not in _backends().available_backends():
            raise ValueError(_backends().unknown_backend(name))
        return name

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: DatabaseUrl | None) -> DatabaseUrl | None:
        if url is not None and _backend_of(url.get_secret_value()) is None:
            schemes = ", ".join(f"{s}://" for s in _backends().schemes())
            raise ValueError(f"must be a database URL starting with one of {schemes}")
        return url

    @field_validator("schema_name")
    @classmethod
    def _schema_identifier(cls, name: str) -> str:
        if not SCHEMA_NAME.fullmatch(name):
            raise ValueError(
                "must be a lowercase SQL name: letters a-z, digits and _, not starting with a "
                "digit, at most 63 characters"
            )
        return name

    @model_validator(mode="before")
    @classmethod
    def _backend_from_url(cls, data: Any) -> Any:
        """``url``'s scheme decides ``backend`` (and, for ``sqlite:///``, ``path``)."""
        if not isinstance(data, Mapping):
            return data
        url = data.get("url")
        if isinstance(url, SecretStr):
            url = url.get_secret_value()
        if not isinstance(url, str):
            return data
        backend = _backend_of(url)
        if backend is None:
            return data  # the field validator names the scheme
        given = data.get("backend")
        if given is not None and given != backend:
            raise ValueError(
                f'backend = "{given}" contradicts url, whose scheme selects "{backend}"; '
                "keep one of them"
            )
        derived = {**data, "backend": backend}
        if backend == "sqlite":
            path = sqlite_path(url)
            if data.get("path") is not None and Path(data["path"]) != Path(path):
                raise ValueError("path and url name different SQLite files; keep one of them")
            derived["path"] = path
        elif data.get("path") is not None:
            raise ValueError("path is the SQLite file; a postgresql:// url needs none")
        return derived

    @model_validator(mode="after")
    def _url_when_needed(self) -> QueueSettings:
        backend = _backends().get_backend(self.backend)
        if backend.needs_url and self.url is None:
            scheme = backend.schemes[0] if backend.schemes else "..."
            raise ValueError(f'backend = "{self.backend}" needs url = "{scheme}://..."')
        return self

    @classmethod
    def coerce(cls, value: QueueSettings | Mapping[str, Any] | None) -> QueueSettings | None:
        """``value`` as settings; ``None`` (or ``enabled = false``) means direct delivery.

        Raises ``ConfigError`` naming each bad key as ``queue.<key>``.
        """
        if value is None:
            return None
        if isinstance(value, QueueSettings):
            settings = value
        elif not isinstance(value, Mapping):
            raise ConfigError(["queue: must be a table of [queue] settings"])
        else:
            try:
                settings = cls.model_validate(dict(value))
            except ValidationError as exc:
                # Paths and sizes are no secrets, and the URL masks its own password.
                raise ConfigError(validation_problems(exc, "queue", echoes=True)) from None
        return settings if settings.enabled else None

    @property
    def byte_limit(self) -> int:
        """``max_bytes``, or the backend's default (1 GiB when durable, 64 MiB in memory)."""
        if self.max_bytes is not None:
            return self.max_bytes
        return _DEFAULT_MAX_BYTES[_backends().get_backend(self.backend).durable]


def _backends() -> ModuleType:
    """``router_core.outbox.backends``, imported on first use: the engines import these
    settings, so the settings cannot import the outbox package while it loads."""
    from router_core.outbox import backends as module  # noqa: PLC0415

    return module


def _backend_of(url: str) -> str | None:
    """The backend ``url``'s scheme selects, or ``None`` for a scheme no backend claims."""
    scheme = scheme_of(url)
    return _backends().backend_for_scheme(scheme) if scheme else None


_KINDS = (
    (stat.S_ISREG, "a file"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def path_problem(path: Path) -> str | None:
    """Why ``path`` cannot hold an outbox, or None when it can.

    A path that exists must be a regular file (the outbox opens it as a database; ``/dev/null``
    or a directory would fail later, or silently lose events); the nearest existing ancestor
    must be a directory, since the outbox creates the file and missing parents.
    """
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte, a lone surrogate
        return f"{str(path)!r} cannot be used: {exc}"
    if mode is not None:
        if stat.S_ISREG(mode):
            return None
        return f"{str(path)!r} is {_kind(mode)}; the outbox must be a regular file"
    for parent in path.parents:
        try:
            mode = parent.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            return f"cannot check {str(parent)!r}: {exc.strerror or exc}"
        if stat.S_ISDIR(mode):
            return None
        return f"{str(parent)!r} (in {str(path)!r}) is {_kind(mode)}, not a directory"
    return None
