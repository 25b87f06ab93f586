"""event-router's log lines: built by structlog, delivered through the standard ``logging`` module.

Every line goes to a stdlib logger under ``event_router`` (``event_router.delivery`` for delivery
attempts and plugins' own lines, ``event_router.outbox``, ``event_router.plugins``,
``event_router.sandbox``), so the application's handlers and levels decide what is printed.
Nothing here adds a handler unless asked (``configure_logging()``, ``[logging]``,
``EVENT_ROUTER_LOG_*``, the command line); with no logging configured at all, Python's
last-resort handler prints warnings and errors to stderr.

Levels: a delivered attempt is DEBUG, a retry or a failure WARNING, summaries INFO, lost events
ERROR.

What a record carries:

- Without an application structlog configuration, the message is the event name followed by
  its fields as ``key=value`` (``delivery_attempt destination=segment status=delivered ...``),
  and every field is also an attribute of the ``LogRecord`` (``record.event``,
  ``record.destination``, ``record.status``, ...); a field named like a ``LogRecord`` attribute
  gets a trailing ``_`` (``name_``).
- When the application configured structlog (``structlog.configure()``), its processors build
  the message instead, exactly as for its own lines (so ``ProcessorFormatter.wrap_for_formatter``
  or a ``JSONRenderer`` work as usual), and the fields are record attributes as well.

Secrets are masked before any processor, filter or handler sees a record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TextIO, cast

import structlog
from structlog.typing import FilteringBoundLogger

from router_core.errors import ConfigError
from router_core.secrets import looks_secret, mask, redact

if TYPE_CHECKING:
    from router_core.settings import LoggingSettings

__all__ = [
    "LOGGER_NAME",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "stdlib_logger",
]

LOGGER_NAME = "event_router"
LOG_FORMAT_ENV_VAR = "EVENT_ROUTER_LOG_FORMAT"
LOG_LEVEL_ENV_VAR = "EVENT_ROUTER_LOG_LEVEL"

_FORMATS = ("console", "json")
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# structlog method name -> the level it logs at (``log(level, ...)`` arrives by level name).
_METHOD_LEVELS = {
    **_LEVELS,
    "warn": logging.WARNING,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}
# What a LogRecord already has: a field by one of these names cannot be an attribute as is.
_RECORD_ATTRS = frozenset(
    [*logging.LogRecord("n", 0, "p", 0, "m", (), None).__dict__, "message", "asctime"]
)
# Passed to the stdlib call itself, never stored as fields.
_CALL_KEYS = frozenset({"exc_info", "stack_info", "stacklevel", "positional_args"})


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask registered secrets in every string (nested ones too) and the
    values of secret-named fields (``router_core.secrets.SECRET_KEY_PARTS``)."""
    for key, value in event_dict.items():
        event_dict[key] = mask(value, secret=key != "event" and looks_secret(key))
    return event_dict


# -- building records -----------------------------------------------------------------------


def _record_attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {
        (f"{key}_" if key in _RECORD_ATTRS else key): value
        for key, value in fields.items()
        if key not in _CALL_KEYS
    }


_LOGFMT = structlog.processors.LogfmtRenderer(bool_as_flag=False)


def _message(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
    """The last processor when the app has no structlog set-up: ``event key=value ...``."""
    call = {key: event_dict.pop(key) for key in ("exc_info", "stack_info") if key in event_dict}
    event_dict.pop("positional_args", None)
    event = str(event_dict.pop("event", ""))
    rest = _LOGFMT(None, "", event_dict) if event_dict else ""
    return ((f"{event} {rest}" if rest else event,), call)


_OWN: list[Any] = [_message]  # the processors when the app has no structlog set-up


def _as_call(result: Any) -> tuple[Sequence[Any], Mapping[str, Any]]:
    # The same shapes structlog's own wrappers accept from the last processor.
    if isinstance(result, str | bytes | bytearray):
        return (result,), {}
    if isinstance(result, tuple):
        args, kwargs = result
        return args, kwargs
    if isinstance(result, dict):
        return (), result
    raise ValueError(
        "the last structlog processor returned "
        f"{type(result).__name__}; expected str, bytes, a tuple (args, kwargs) or a dict"
    )


_STRUCTLOG_DIR = os.path.dirname(structlog.__file__)


def _caller_level() -> int:
    """The ``stacklevel`` that makes a record's file, line and function the caller's, not
    structlog's or ours (the frames between differ across structlog versions)."""
    frame = sys._getframe(2)  # the frame that calls the stdlib logger
    level = 1
    while frame.f_back is not None and (
        frame.f_code.co_filename == __file__ or frame.f_code.co_filename.startswith(_STRUCTLOG_DIR)
    ):
        frame = frame.f_back
        level += 1
    return level


class _BoundLogger(structlog.stdlib.BoundLogger):
    """A structlog logger over an ``event_router.*`` stdlib logger.

    Nothing is built for a level the stdlib logger would drop (unless structlog's
    ``capture_logs()`` is listening: it sees every line, as with structlog's own loggers).
    Secrets are masked before the processors run, and the masked fields become attributes of
    the stdlib record (``extra``) whatever the last processor renders.
    """

    def _listening(self) -> bool:
        if self._processors is _OWN:
            return False
        return any(isinstance(p, structlog.testing.LogCapture) for p in self._processors)

    def _proxy_to_logger(
        self, method_name: str, event: str | None = None, *event_args: str, **event_kw: Any
    ) -> Any:
        level = _METHOD_LEVELS.get(method_name, logging.NOTSET)
        if not self._logger.isEnabledFor(level) and not self._listening():
            return None
        return super()._proxy_to_logger(method_name, event, *event_args, **event_kw)

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        # The hot path (a line per delivered attempt, usually off): check before packing.
        if not self._logger.isEnabledFor(logging.DEBUG) and not self._listening():
            return None
        return super()._proxy_to_logger("debug", event, *args, **kw)

    def _process_event(
        self, method_name: str, event: str | None, event_kw: dict[str, Any]
    ) -> tuple[Sequence[Any], Mapping[str, Any]]:
        fields: dict[str, Any] = {**self._context, **event_kw}
        if event is not None:
            fields["event"] = event
        redact_secrets(None, method_name, fields)
        result: Any = dict(fields)  # the processors may change it; the attributes stay
        for processor in self._processors:
            result = processor(self._logger, method_name, result)
        args, kwargs = _as_call(result)
        extra = {**_record_attributes(fields), **kwargs.get("extra", {})}
        return args, {"stacklevel": _caller_level(), **kwargs, "extra": extra}


class _SecretsFilter(logging.Filter):
    """Masks registered secrets in records logged straight through the stdlib logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def stdlib_logger(name: str = LOGGER_NAME) -> logging.Logger:
    """The stdlib logger ``name`` (under ``event_router``), with secret masking attached."""
    logger = logging.getLogger(name)
    # Unlocked: two threads racing here add the filter twice, and masking twice is harmless.
    if not any(isinstance(f, _SecretsFilter) for f in logger.filters):
        logger.addFilter(_SecretsFilter())
    return logger


def _bound(name: str, context: Mapping[str, Any]) -> Any:
    logger = stdlib_logger(name)
    # The app's own list when it configured structlog, not a copy: capture_logs() edits it in
    # place.
    processors = structlog.get_config()["processors"] if structlog.is_configured() else _OWN
    return _BoundLogger(logger, processors, dict(context))


class _LazyLogger:
    """What ``get_logger()`` returns: each call uses the structlog set-up in force at the time,
    and ``bind()`` fixes it for the bound logger it returns (bind once, log often)."""

    def __init__(self, name: str, context: Mapping[str, Any]) -> None:
        self._name = name
        self._context = dict(context)

    def bind(self, **values: Any) -> Any:
        return _bound(self._name, {**self._context, **values})

    def __getattr__(self, attr: str) -> Any:
        return getattr(_bound(self._name, self._context), attr)


def get_logger(name: str = LOGGER_NAME, **context: Any) -> FilteringBoundLogger:
    """A structlog logger writing to the stdlib logger ``name`` (``event_router.<part>``).

    Typed as structlog's ``FilteringBoundLogger``: ``debug``/``info``/``warning``/``error``
    with an event name and key-value fields, and ``bind()``.
    """
    return cast("FilteringBoundLogger", _LazyLogger(name, context))


# -- event-router's own handler (opt-in) ----------------------------------------------------


class _LineWriter:
    """Writes each line with one call, under a fork-safe lock.

    A lock held for the life of the process would hang a child forked while the router's thread
    held it (gunicorn --preload, Celery prefork) on its first log line. This lock is replaced in
    every forked child (the stdlib does the same for each handler's own lock).
    """

    _lock = threading.Lock()

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stderr  # looked up per line: tests swap sys.stderr
        with _LineWriter._lock:
            stream.write(message + "\n")
            stream.flush()


def _new_lock_in_child() -> None:
    _LineWriter._lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


class _Formatter(logging.Formatter):
    """Renders any record as one console or JSON line: event, fields, level, logger, time."""

    def __init__(self, format: Literal["console", "json"]) -> None:
        super().__init__()
        self._renderer: Any = (
            structlog.processors.JSONRenderer()
            if format == "json"
            else structlog.dev.ConsoleRenderer(colors=False)
        )

    def format(self, record: logging.LogRecord) -> str:
        fields = {
            k: v for k, v in record.__dict__.items() if k not in _RECORD_ATTRS and k[:1] != "_"
        }
        event_dict: MutableMapping[str, Any] = {
            "event": fields.pop("event", None) or record.getMessage()
        }
        event_dict.update(fields)
        event_dict["level"] = record.levelname.lower()
        event_dict["logger"] = record.name
        event_dict["timestamp"] = datetime.fromtimestamp(record.created, UTC).isoformat()
        if record.exc_info:
            event_dict["exc_info"] = record.exc_info
            event_dict = structlog.processors.format_exc_info(None, "", event_dict)
        redact_secrets(None, "", event_dict)  # exception text included
        return str(self._renderer(None, event_dict["level"], event_dict))


class _Handler(logging.Handler):
    """event-router's own handler: one rendered line per record, written with one call."""

    def __init__(
        self, format: Literal["console", "json"], stream: TextIO | None, *, from_settings: bool
    ) -> None:
        super().__init__()
        self.setFormatter(_Formatter(format))
        self._writer = _LineWriter(stream)
        # Installed by a router's [logging] table or EVENT_ROUTER_LOG_*, not by a call: a later
        # router may replace it, but never a handler someone installed on purpose.
        self.from_settings = from_settings

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _resolve(format: str | None, level: str | None) -> tuple[Literal["console", "json"], int]:
    """Format and level from the arguments, else the environment, else console at info."""
    fmt_source = level_source = None
    if format is None and os.environ.get(LOG_FORMAT_ENV_VAR):
        format, fmt_source = os.environ[LOG_FORMAT_ENV_VAR], LOG_FORMAT_ENV_VAR
    if level is None and os.environ.get(LOG_LEVEL_ENV_VAR):
        level, level_source = os.environ[LOG_LEVEL_ENV_VAR], LOG_LEVEL_ENV_VAR
    fmt = (format or "console").lower()
    if fmt not in _FORMATS:
        where = f"{fmt_source}: " if fmt_source else ""
        raise ValueError(f"{where}unknown log format {fmt!r}; use console or json")
    numeric = _LEVELS.get((level or "info").lower())
    if numeric is None:
        where = f"{level_source}: " if level_source else ""
        raise ValueError(
            f"{where}unknown log level {(level or '').lower()!r}; use debug, info, warning or error"
        )
    return ("json" if fmt == "json" else "console"), numeric


def _install(
    format: str | None, level: str | None, stream: TextIO | None, *, from_settings: bool
) -> None:
    fmt, numeric = _resolve(format, level)
    logger = stdlib_logger()
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    logger.addHandler(_Handler(fmt, stream, from_settings=from_settings))
    logger.setLevel(numeric)


def configure_logging(
    format: Literal["console", "json"] | None = None,
    level: str | None = None,
    stream: TextIO | None = None,
) -> None:
    """Print event-router's lines yourself: install its handler on the ``event_router`` logger.

    One line per record, console or JSON, to ``stream`` (default: stderr), with secrets masked;
    the ``event_router`` logger is set to ``level`` (``debug`` shows every delivery attempt).
    Defaults come from ``EVENT_ROUTER_LOG_FORMAT`` (console|json) and ``EVENT_ROUTER_LOG_LEVEL``
    (debug|info|warning|error), else console at info. Calling it again replaces the handler.
    Records still propagate to the application's own handlers; structlog's global
    configuration is never touched.
    """
    _install(format, level, stream, from_settings=False)


def configure_from_settings(settings: LoggingSettings) -> None:
    """What a router does with ``[logging]`` and ``EVENT_ROUTER_LOG_*``.

    Only when one of them is set, and unless event-router's handler was installed by a call
    (``configure_logging()``, the command line): the environment wins over the table. Otherwise
    logging is left to the application.
    """
    explicit = settings.model_fields_set
    from_env = {var for var in (LOG_FORMAT_ENV_VAR, LOG_LEVEL_ENV_VAR) if os.environ.get(var)}
    if not explicit and not from_env:
        return
    if any(isinstance(h, _Handler) and not h.from_settings for h in stdlib_logger().handlers):
        return
    # None where the environment has a value: _resolve() reads it and names it in errors.
    asked = {key: getattr(settings, key) for key in explicit}
    format = None if LOG_FORMAT_ENV_VAR in from_env else asked.get("format")
    level = None if LOG_LEVEL_ENV_VAR in from_env else asked.get("level")
    try:
        _install(format, level, None, from_settings=True)
    except ValueError as exc:
        raise ConfigError([str(exc)]) from None


@contextlib.contextmanager
def logging_restored() -> Iterator[None]:
    """Leave the ``event_router`` logger's handlers and level as they were on entry."""
    logger = stdlib_logger()
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    try:
        yield
    finally:
        for handler in [h for h in logger.handlers if h not in handlers]:
            logger.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
