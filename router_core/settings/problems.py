"""Turning a pydantic ``ValidationError`` into problem lines that name the key at fault.

Config files, the ``[queue]`` table and job files all report every problem at once, one line
each (``destinations.segment.timeout: Input should be greater than 0``); this is the one place
that wording is made, and the one place that keeps values out of it: a value in the wrong
field may be a key, and pydantic's messages and a plugin's validators can echo it.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any

from pydantic import ValidationError

from router_core.secrets import MASK, redact

__all__ = ["closest", "config_strings", "did_you_mean", "validation_problems", "without_echoes"]

_MIN_ECHO_LENGTH = 8  # shorter values are never keys; masking them would garble messages


def validation_problems(
    exc: ValidationError,
    where: str = "",
    *,
    unknown: str = "unknown setting",
    missing: str | None = None,
    table: Any = None,
    echoes: bool = False,
    known: Mapping[str, Collection[str]] | None = None,
) -> list[str]:
    """One ``"<where>.<field path>: <message>"`` line per error in ``exc``.

    Unless ``echoes`` is true, no line repeats a value of ``table`` (the table validated) or
    the input an error complains about: destination tables hold keys. ``unknown`` words an
    extra key, ``missing`` (when given) a required one; job files say "unknown key" and
    "required", settings "unknown setting" and pydantic's own "Field required".

    ``known`` maps a location (the dotted path below ``where``, ``""`` for the top) to the
    keys valid there: an unknown key close to one of them gets "did you mean 'write_key'?".
    """
    values = list(config_strings(table))
    problems = []
    for error in exc.errors(include_url=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = unknown
            parent = ".".join(str(part) for part in error["loc"][:-1])
            if known is not None and parent in known:
                message += did_you_mean(str(error["loc"][-1]), known[parent])
        elif error["type"] == "missing" and missing is not None:
            message = missing
        path = ".".join(part for part in (where, loc) if part)
        line = f"{path}: {message}" if path else message
        if not echoes:
            line = without_echoes(line, [*values, *config_strings(error.get("input"))])
        problems.append(line)
    return problems


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``word`` most likely misspells, or None when none is close."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not matches:  # case and separators: "writeKey", "WRITE-KEY" for "write_key"
        folded = {_fold(c): c for c in candidates}
        found = folded.get(_fold(word))
        return found if found is not None and found != word else None
    return matches[0] if matches[0] != word else None


def _fold(word: str) -> str:
    return word.lower().replace("_", "").replace("-", "")


def did_you_mean(word: str, candidates: Iterable[str], *, name: str | None = None) -> str:
    """``"; did you mean 'x'?"`` (``"; 'word': did you mean 'x'?"`` with ``name``) when
    ``word`` is close to one of ``candidates``, else ``""``."""
    match = closest(word, candidates)
    if match is None:
        return ""
    return f"; {name!r}: did you mean {match!r}?" if name else f"; did you mean {match!r}?"


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
