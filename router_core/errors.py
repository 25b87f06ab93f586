"""Every exception event-router raises on purpose, and the one plugins raise to report a failed
delivery. All of them are ``RouterError``; catching it catches every expected failure::

    RouterError
    ├── InvalidEventError (ValueError)    an event failed validation; nothing was sent
    ├── ConfigError (ValueError)          the config is unusable; .problems lists every problem
    ├── PluginLoadError                   a plugin could not be imported or registered
    ├── JobInputError (ValueError)        a job file's --set override is malformed
    ├── RouterClosedError (RuntimeError)  send() after close()
    ├── DeliveryError                     raised by plugins: a destination refused an event
    │   └── (each plugin's own, e.g. SegmentAPIError, PostHogAPIError)
    ├── TransformError                    a transform raised or made an invalid event
    ├── OutboxFullError                   the outbox reached max_events / max_bytes
    ├── DeliveryDisabledError (RuntimeError)  flush() where [queue] deliver = false
    ├── TransactionalSendError (ValueError)   send(connection=...) cannot use that transaction
    ├── OutboxUnavailableError            the SQLite outbox's file cannot be used
    │   └── OutboxDiskFullError           the disk holding it is full
    └── (each outbox engine's own, defined with the engine: PostgresOutboxError,
         SchemaVersionError ← SchemaMissingError in router_core.outbox.postgres)

``RedactedError`` (router_core.redaction) is not raised: it stands in for a plugin's exception
whose text showed a secret, inside ``DeliveryResult.exception``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router_core.secrets import redact

__all__ = [
    "ConfigError",
    "DeliveryDisabledError",
    "DeliveryError",
    "InvalidEventError",
    "JobInputError",
    "OutboxDiskFullError",
    "OutboxFullError",
    "OutboxUnavailableError",
    "PluginLoadError",
    "RouterClosedError",
    "RouterError",
    "TransactionalSendError",
    "TransformError",
]


class RouterError(Exception):
    """Base class of every error event-router raises on purpose."""


class InvalidEventError(RouterError, ValueError):
    """An event failed validation; nothing was sent.

    ``problems`` lists ``(field path, message)`` pairs so callers can show every problem.
    """

    def __init__(self, message: str, problems: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[tuple[str, str], ...] = tuple(problems)


class ConfigError(RouterError, ValueError):
    """The configuration is unusable. ``problems`` holds every problem found, not just the first."""

    def __init__(self, problems: Sequence[str], source: str | None = None) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.problems) == 1:
            message = f"invalid config{where}: {self.problems[0]}"
        else:
            listed = "\n".join(f"  - {p}" for p in self.problems)
            message = f"invalid config{where} ({len(self.problems)} problems):\n{listed}"
        super().__init__(message)


class PluginLoadError(RouterError):
    """A plugin could not be imported or registered."""

    def __init__(self, plugin: str, reason: str) -> None:
        super().__init__(f"plugin {plugin!r} failed to load: {reason}")
        self.plugin = plugin
        self.reason = reason


class JobInputError(RouterError, ValueError):
    """An input override of a job file (``--set PATH=VALUE``) is malformed or cannot be applied."""


class RouterClosedError(RouterError, RuntimeError):
    """``send()`` was called on a router after ``close()``."""


class DeliveryError(RouterError):
    """Raised by a plugin when a destination did not accept an event.

    ``retryable`` tells the router whether another attempt may succeed (timeouts, 408, 429, 5xx);
    ``retry_after`` carries a server's ``Retry-After`` in seconds; ``output`` is the
    destination-specific response shown to users (for example the PostHog run job's shape).
    Plugin-specific errors subclass this one.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        body: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        output: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.body = body
        self.retryable = retryable
        self.retry_after = retry_after
        self.output: Mapping[str, Any] | None = output

    # Masked when shown, wherever it is shown: a plugin may log the error before the router
    # (which masks its fields) ever sees it.
    def __str__(self) -> str:
        return redact(str(self.message))

    def __repr__(self) -> str:
        message = redact(str(self.message))
        return f"{type(self).__name__}({message!r}, status_code={self.status_code!r})"


class OutboxFullError(RouterError):
    """The outbox reached ``max_events`` or ``max_bytes``; the event was not accepted.

    Raised at once with ``when_full = "refuse"``, or after ``block_timeout`` seconds with
    ``when_full = "block"``. ``limit`` names the setting that was hit (``"max_events"`` or
    ``"max_bytes"``); nothing already in the outbox is affected.
    """

    def __init__(self, message: str, *, limit: str, value: int, stored: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.value = value
        self.stored = stored


class OutboxUnavailableError(RouterError):
    """The outbox's file cannot be used: not an outbox, read-only, deleted, locked, broken.

    ``path`` is the file; the message says what is wrong and what to do. Raised by opening
    the outbox (``Router(...)``), by ``send()`` (the event was not accepted), and by
    ``flush()`` and the maintenance calls. Events accepted earlier are never dropped by it.
    """

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class OutboxDiskFullError(OutboxUnavailableError):
    """The disk holding the outbox is full, or too nearly full to keep delivering.

    The event was not accepted; everything accepted before stays stored and is still
    delivered. ``send()`` accepts events again by itself once there is room.
    """


class DeliveryDisabledError(RouterError, RuntimeError):
    """``flush()`` in a process with ``[queue] deliver = false``: it only enqueues, and
    cannot wait for delivery done by ``event-router worker`` processes."""


class TransactionalSendError(RouterError, ValueError):
    """``send(event, connection=...)`` cannot write the event in that transaction: the
    outbox is not PostgreSQL, the connection is not one it can use, or it is to another
    database. Nothing was written."""


class TransformError(RouterError):
    """A transform raised, or produced something that is not a valid event.

    It fails the event for that destination only. ``destination`` is the destination's name,
    ``index`` the transform's position in its ``transforms`` list (from 0), ``transform`` its
    ``type`` and ``plugin`` the plugin's name for a ``type = "plugin"`` transform. ``reason``
    is the cause's text with every registered secret masked; the cause itself is not chained,
    so a traceback cannot carry a secret it held.
    """

    def __init__(
        self,
        destination: str,
        index: int,
        transform: str,
        reason: str,
        *,
        plugin: str | None = None,
    ) -> None:
        self.destination = destination
        self.index = index
        self.transform = transform
        self.plugin = plugin
        self.reason = redact(reason)
        label = f"plugin {plugin!r}" if plugin is not None else transform
        super().__init__(
            f"destinations.{destination}.transforms[{index}] ({label}) failed: {self.reason}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only ``plugin`` needs help to survive pickling (worker processes, queues).
        return (
            _rebuild_transform_error,
            (self.destination, self.index, self.transform, self.reason, self.plugin),
        )


def _rebuild_transform_error(
    destination: str, index: int, transform: str, reason: str, plugin: str | None
) -> TransformError:
    return TransformError(destination, index, transform, reason, plugin=plugin)
