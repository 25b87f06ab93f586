"""``[queue]``: queued delivery through a durable outbox, validated."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from router_core.errors import ConfigError
from router_core.settings import RetrySettings

__all__ = ["DEFAULT_OUTBOX_PATH", "QueueRetrySettings", "QueueSettings"]

DEFAULT_OUTBOX_PATH = Path(".event-router/outbox.db")

# Used when max_bytes is not set: the disk holds a large backlog, memory a small one.
_DEFAULT_MAX_BYTES = {"sqlite": 1024**3, "memory": 64 * 1024**2}


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

    See docs/delivery.md for every key. ``path`` is relative to the working directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    backend: Literal["sqlite", "memory"] = "sqlite"
    path: Path = DEFAULT_OUTBOX_PATH
    synchronous: Literal["normal", "full"] = "normal"
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
                raise ConfigError(_problems(exc)) from None
        return settings if settings.enabled else None

    @property
    def byte_limit(self) -> int:
        """``max_bytes``, or the backend's default (1 GiB on disk, 64 MiB in memory)."""
        return self.max_bytes if self.max_bytes is not None else _DEFAULT_MAX_BYTES[self.backend]


def _problems(exc: ValidationError) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in ("queue", *error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        problems.append(f"{loc}: {message}")
    return problems
