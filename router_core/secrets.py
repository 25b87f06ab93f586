"""Keep secrets out of logs, reprs, errors and results.

Settings mark secrets ``SecretStr`` (pydantic masks them in reprs). Their plain values are
registered here when a destination is built, and ``redact`` removes them from any text that
leaves the router (error messages, response bodies, log lines) in case a server echoes one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, SecretStr

__all__ = ["MASK", "redact", "register_secret", "secrets_in"]

MASK = "**********"
_MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Remember ``value`` so ``redact`` masks it from now on."""
    global _pattern  # noqa: PLW0603 - one process-wide set, read lock-free by redact()
    if len(value) < _MIN_SECRET_LENGTH or value in _secrets:
        return
    with _lock:
        _secrets.add(value)
        # Longest first so a secret containing another is masked whole.
        ordered = sorted(_secrets, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(s) for s in ordered))


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``MASK``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def secrets_in(model: BaseModel) -> Iterable[str]:
    """Yield the plain values of every ``SecretStr`` in ``model``, nested models included."""
    for name in type(model).model_fields:
        yield from _walk(getattr(model, name))


def _walk(value: Any) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, BaseModel):
        yield from secrets_in(value)
    elif isinstance(value, list | tuple | set):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
