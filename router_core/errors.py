"""Exceptions raised by event-router, and the one plugins raise to report a failed delivery."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from router_core.secrets import redact

__all__ = [
    "ConfigError",
    "DeliveryError",
    "InvalidEventError",
    "JobInputError",
    "PluginLoadError",
    "RouterClosedError",
    "RouterError",
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
