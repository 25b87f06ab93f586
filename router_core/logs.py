"""structlog set-up: one line per delivery attempt, JSON or console, secrets always masked."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

from router_core.secrets import looks_secret, mask

__all__ = ["configure_logging", "redact_secrets"]

LOG_FORMAT_ENV_VAR = "EVENT_ROUTER_LOG_FORMAT"
LOG_LEVEL_ENV_VAR = "EVENT_ROUTER_LOG_LEVEL"


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every string (nested ones too) and the
    values of secret-named fields (``router_core.secrets.SECRET_KEY_PARTS``)."""
    for key, value in event_dict.items():
        event_dict[key] = mask(value, secret=key != "event" and looks_secret(key))
    return event_dict


class _LineWriter:
    """A structlog logger that writes each line with one call, under a fork-safe lock.

    structlog's own PrintLogger keeps a lock per file for the life of the process; a child
    forked while the router's thread held it (gunicorn --preload, Celery prefork) would hang on
    its first log line. This lock is replaced in every forked child.
    """

    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr  # looked up per line: tests swap sys.stderr
        with _LineWriter._lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warning = warn = error = err = critical = exception = failure = msg


def _new_lock_in_child() -> None:
    _LineWriter._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


class _LineWriterFactory:
    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _LineWriter:
        return _LineWriter(self._stream)


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
        logger_factory=_LineWriterFactory(stream),
        cache_logger_on_first_use=True,
    )


def ensure_configured() -> None:
    """Configure with the defaults unless the application configured structlog itself."""
    if not structlog.is_configured():
        configure_logging()
