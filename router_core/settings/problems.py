"""Turning a pydantic ``ValidationError`` into problem lines that name the key at fault.

Config files, the ``[queue]`` table and job files all report every problem at once, one line
each (``destinations.segment.timeout: Input should be greater than 0``); this is the one place
that wording is made, and the one place that keeps values out of it: a value in the wrong
field may be a key, and pydantic's messages and a plugin's validators can echo it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from router_core.secrets import MASK, redact

__all__ = ["config_strings", "validation_problems", "without_echoes"]

_MIN_ECHO_LENGTH = 8  # shorter values are never keys; masking them would garble messages


def validation_problems(
    exc: ValidationError,
    where: str = "",
    *,
    unknown: str = "unknown setting",
    missing: str | None = None,
    table: Any = None,
    echoes: bool = False,
) -> list[str]:
    """One ``"<where>.<field path>: <message>"`` line per error in ``exc``.

    Unless ``echoes`` is true, no line repeats a value of ``table`` (the table validated) or
    the input an error complains about: destination tables hold keys. ``unknown`` words an
    extra key, ``missing`` (when given) a required one; job files say "unknown key" and
    "required", settings "unknown setting" and pydantic's own "Field required".
    """
    values = list(config_strings(table))
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = unknown
        elif error["type"] == "missing" and missing is not None:
            message = missing
        path = ".".join(part for part in (where, loc) if part)
        line = f"{path}: {message}" if path else message
        if not echoes:
            line = without_echoes(line, [*values, *config_strings(error.get("input"))])
        problems.append(line)
    return problems


def config_strings(value: Any) -> Iterator[str]:
    """Every string in a config value (tables and arrays walked)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from config_strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from config_strings(item)


def without_echoes(text: str, values: Iterable[str]) -> str:
    """``text`` with each of ``values`` (as given, stripped, or repr-escaped) masked, and every
    registered secret too."""
    forms = {
        form
        for value in values
        for form in (value, value.strip(), repr(value)[1:-1])
        if len(form.strip()) >= _MIN_ECHO_LENGTH
    }
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return redact(text)
