"""Exit codes, and turning every expected error into one line on stderr (never a traceback).

0: every destination delivered; 1: some destination failed; 2: bad input or config (the line
says what to fix); 3: an internal error (a bug); 130: interrupted. With ``--json`` the error
is also a JSON object on stdout (``error_json``), so a script reading stdout sees it.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from router_core.errors import ConfigError, RouterError
from router_core.jsonable import printable
from router_core.logs import logging_restored

__all__ = [
    "DEBUG_ENV_VAR",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "BadInput",
    "CommandGroup",
    "RouterGroup",
    "describe",
    "error_json",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

DEBUG_ENV_VAR = "EVENT_ROUTER_DEBUG"
"""Set to 1 to get the traceback of an internal error."""


class BadInput(click.ClickException):
    """Bad input or config: exit 2 with one line saying what to fix."""

    exit_code = EXIT_BAD_INPUT


def describe(exc: BaseException) -> str:
    """One line describing an expected error."""
    if isinstance(exc, ConfigError):
        count = f" ({len(exc.problems)} problems)" if len(exc.problems) > 1 else ""
        where = f"{exc.source}{count}: " if exc.source else (f"{count.strip()}: " if count else "")
        return f"{where}{'; '.join(exc.problems)}"
    if isinstance(exc, click.UsageError):
        hint = ""
        if exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        return f"{exc.format_message()}{hint}"
    if isinstance(exc, click.ClickException):
        return exc.format_message()
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON: {exc}"
    if isinstance(exc, OSError):
        name = f" {exc.filename!r}" if exc.filename else ""
        return f"cannot access{name}: {exc.strerror or exc}"
    return str(exc)


def error_json(message: str, code: int, problems: Sequence[str] | None = None) -> dict[str, Any]:
    """The one shape of a failed command's ``--json`` output (``config check`` adds its own
    keys to it): ``{"ok": false, "error": ..., "exit_code": ..., "problems": [...]}``."""
    line = _one_line(message)
    return {
        "ok": False,
        "error": line,
        "exit_code": code,
        "problems": [printable(p) for p in problems] if problems is not None else [line],
    }


def _wants_json(args: Sequence[str] | None) -> bool:
    """Whether the command line asks for ``--json`` (looked at before click parses it, so a
    usage error is JSON too)."""
    tokens = list(sys.argv[1:] if args is None else args)
    if "--" in tokens:
        tokens = tokens[: tokens.index("--")]
    return "--json" in tokens


def _one_line(text: str) -> str:
    # printable(): a lone surrogate echoed from bad input must not break writing the line.
    return printable(" ".join(part.strip() for part in text.splitlines() if part.strip()))


def _fail(
    message: str, code: int, *, as_json: bool = False, exc: BaseException | None = None
) -> int:
    if as_json:
        problems = exc.problems if isinstance(exc, ConfigError) else None
        click.echo(json.dumps(error_json(message, code, problems), indent=2, ensure_ascii=False))
    click.echo(f"error: {_one_line(message)}", err=True)
    return code


class CommandGroup(click.Group):
    """A group whose command list shows each command's whole first sentence.

    click cuts summaries to fit one line at 80 columns ("Run a job file and print its
    response (exit 1 when a..."); here a long one wraps instead.
    """

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=_WHOLE_SENTENCE)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


_WHOLE_SENTENCE = 10_000


class RouterGroup(CommandGroup):
    """The top-level group: runs a command and maps what it raised to an exit code.

    Commands return their exit code (0 or 1); expected errors become one line on stderr and
    exit 2; anything else is a bug, reported on one line with exit 3.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        # Commands install event-router's log handler for their run; calling main() from
        # Python (tests, an embedding app) must leave the process's logging as it found it.
        with logging_restored():
            code = self._run(args, prog_name, complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        **extra: Any,
    ) -> int:
        as_json = _wants_json(args)
        try:
            returned = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc), err=True)
            return EXIT_BAD_INPUT
        except (click.Abort, KeyboardInterrupt):
            return _fail("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        except click.ClickException as exc:  # usage errors, BadInput
            return _fail(describe(exc), exc.exit_code, as_json=as_json)
        except (RouterError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _fail(describe(exc), EXIT_BAD_INPUT, as_json=as_json, exc=exc)
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # the reader went away (| head): not our error
                return EXIT_OK
            return _fail(describe(exc), EXIT_BAD_INPUT, as_json=as_json)
        except Exception as exc:
            if os.environ.get(DEBUG_ENV_VAR):
                traceback.print_exc()
            return _fail(
                f"internal error: {type(exc).__name__}: {exc} "
                f"(this is a bug; set {DEBUG_ENV_VAR}=1 for the traceback)",
                EXIT_INTERNAL,
                as_json=as_json,
            )
        if isinstance(returned, int) and not isinstance(returned, bool):
            return returned
        return EXIT_OK
