"""Options and helpers shared by the commands: ``-c/--config``, ``--json``, ``--verbose``,
plugins, logging."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable
from typing import TextIO, TypeVar, cast

import click

from router_core.cli.errors import BadInput
from router_core.config import LoggingSettings
from router_core.logs import LOG_FORMAT_ENV_VAR, LOG_LEVEL_ENV_VAR, configure_logging
from router_core.plugins import PluginRegistry, default_registry

__all__ = [
    "CONFIG_ENV_VAR",
    "DEFAULT_CONFIG",
    "config_option",
    "json_option",
    "plugin_registry",
    "setup_logging",
    "verbose_option",
]

DEFAULT_CONFIG = "config/router.toml"

CONFIG_ENV_VAR = "EVENT_ROUTER_CONFIG"
"""The config every command reads when no ``-c/--config`` is given."""

F = TypeVar("F", bound=Callable[..., object])


def config_option(
    help: str = "Router config (TOML).",
    *,
    default: str | None = DEFAULT_CONFIG,
) -> Callable[[F], F]:
    """``-c/--config PATH``, the one way every command names its config: the option, else
    ``EVENT_ROUTER_CONFIG``, else ``default``. The value arrives as ``config_path``."""
    return click.option(
        "-c",
        "--config",
        "config_path",
        default=default,
        show_default=default is not None,
        envvar=CONFIG_ENV_VAR,
        show_envvar=True,
        type=click.Path(dir_okay=False),
        help=help,
    )


def json_option(func: F) -> F:
    """``--json``: machine-readable JSON only on stdout."""
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print machine-readable JSON only on stdout.",
    )(func)


def verbose_option(func: F) -> F:
    """``-v/--verbose``: show a log line per delivery attempt (debug level) on stderr."""
    return click.option(
        "-v",
        "--verbose",
        is_flag=True,
        help="Log every delivery attempt on stderr (default: warnings only).",
    )(func)


def plugin_registry() -> PluginRegistry:
    """The plugins to route with: one given to the command line (tests embed their own),
    else the installed ones."""
    ctx = click.get_current_context(silent=True)
    given = ctx.find_object(PluginRegistry) if ctx is not None else None
    return given if given is not None else default_registry()


class _CurrentStderr(io.TextIOBase):
    """Writes to whatever ``sys.stderr`` is now, so a replaced stderr is always honoured."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def setup_logging(verbose: bool, settings: LoggingSettings | None = None) -> None:
    """event-router's lines on stderr: every delivery attempt with ``--verbose``, otherwise
    warnings only (or the level in ``EVENT_ROUTER_LOG_LEVEL``), so tables and JSON are not
    buried in log lines. The format: ``EVENT_ROUTER_LOG_FORMAT``, else the one ``settings``
    (the config's ``[logging]`` table) sets, else console."""
    # None lets configure_logging() read the variable, and name it if its value is wrong.
    level = "debug" if verbose else None if os.environ.get(LOG_LEVEL_ENV_VAR) else "warning"
    fmt = None
    if settings is not None and "format" in settings.model_fields_set:
        fmt = None if os.environ.get(LOG_FORMAT_ENV_VAR) else settings.format
    try:
        configure_logging(fmt, level, stream=cast(TextIO, _CurrentStderr()))
    except ValueError as exc:
        raise BadInput(str(exc)) from None
