"""Turning a pydantic ``ValidationError`` into problem lines that name the key at fault.

Config files, the ``[queue]`` table and job files all report every problem at once, one line
each (``destinations.segment.timeout: Input should be greater than 0``); this is the one place
that wording is made.
"""

from __future__ import annotations

from pydantic import ValidationError

__all__ = ["validation_problems"]


def validation_problems(
    exc: ValidationError,
    where: str = "",
    *,
    unknown: str = "unknown setting",
    missing: str | None = None,
) -> list[str]:
    """One ``"<where>.<field path>: <message>"`` line per error in ``exc``.

    The input is never echoed (it may be a secret pasted into the wrong key). ``unknown`` words
    an extra key, ``missing`` (when given) a required one; job files say "unknown key" and
    "required", settings "unknown setting" and pydantic's own "Field required".
    """
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(part) for part in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = unknown
        elif error["type"] == "missing" and missing is not None:
            message = missing
        path = ".".join(part for part in (where, loc) if part)
        problems.append(f"{path}: {message}" if path else message)
    return problems
