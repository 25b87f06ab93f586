"""structlog set-up: one line per delivery attempt, JSON or console, secrets always masked."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from router_core.secrets import redact

__all__ = ["configure_logging", "redact_secrets"]

LOG_FORMAT_ENV_VAR = "EVENT_ROUTER_LOG_FORMAT"
LOG_LEVEL_ENV_VAR = "EVENT_ROUTER_LOG_LEVEL"

_SECRET_KEY_PARTS = ("key", "secret", "token", "password", "authorization")


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every string and secret-named keys."""
    for key, value in event_dict.items():
        if isinstance(value, str):
            lowered = key.lower()
            if any(part in lowered for part in _SECRET_KEY_PARTS) and key != "event":
                event_dict[key] = "**********"
            else:
                event_dict[key] = redact(value)
    return event_dict


def configure_logging(
    format: Literal["console", "json"] | None = None,
    level: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for event-router's lines (and anything else using structlog).

    Defaults come from ``EVENT_ROUTER_LOG_FORMAT`` (console|json) and ``EVENT_ROUTER_LOG_LEVEL``
    (debug|info|warning|error), else console at info, written to stderr.
    """
    fmt = format or os.environ.get(LOG_FORMAT_ENV_VAR, "console")
    level_name = (level or os.environ.get(LOG_LEVEL_ENV_VAR, "info")).upper()
    numeric = logging.getLevelNamesMapping().get(level_name)
    if numeric is None:
        raise ValueError(f"unknown log level {level_name.lower()!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=True,
    )


def ensure_configured() -> None:
    """Configure with the defaults unless the application configured structlog itself."""
    if not structlog.is_configured():
        configure_logging()
