"""Keep secrets out of logs, reprs, errors and results.

Settings mark secrets ``SecretStr`` (pydantic masks them in reprs). Their plain values are
registered here when a destination is built, together with the encodings a server may echo them
in (HTTP Basic's ``base64(key + ":")``, plain base64, URL and JSON escaping), and ``redact``
removes them from any text that leaves the router (error messages, response bodies, log lines).

``mask`` is for values shown whole, such as the reprs of config tables and settings: besides
registered secrets it hides every string under a name that looks secret (``SECRET_KEY_PARTS``)
and the password of a URL, so keys given in code are hidden before any destination is built.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, SecretBytes, SecretStr

__all__ = [
    "MASK",
    "SECRET_KEY_PARTS",
    "MaskedReprModel",
    "exposes",
    "looks_secret",
    "mask",
    "redact",
    "redact_value",
    "register_secret",
    "secrets_in",
    "truncate",
]

MASK = "**********"
_MIN_SECRET_LENGTH = 4  # shorter strings would mask ordinary words

# A setting, table key or log field whose name contains one of these holds a secret.
SECRET_KEY_PARTS = (
    "key",
    "secret",
    "token",
    "password",
    "passwd",
    "pwd",
    "credential",
    "authorization",
    "cookie",
    "signature",
    "dsn",
)

# scheme://user:password@host — the password part.
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")

_lock = threading.Lock()
_values: set[str] = set()  # what was registered
_forms: tuple[str, ...] = ()  # every registered value and encoding, longest first
_pattern: re.Pattern[str] | None = None


def register_secret(value: str) -> None:
    """Remember ``value`` (and its encodings) so ``redact`` masks it from now on."""
    global _forms, _pattern  # noqa: PLW0603 - one process-wide set, read lock-free by redact()
    if len(value) < _MIN_SECRET_LENGTH or value in _values:
        return
    with _lock:
        _values.add(value)
        # Longest first so a secret containing another is masked whole.
        forms = sorted(set(_forms) | _encodings(value), key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(f) for f in forms))
        _forms = tuple(forms)


def _encodings(value: str) -> set[str]:
    """``value`` as a server may echo it: raw, in an HTTP Basic header, base64, escaped."""
    found = {value, quote(value, safe=""), quote_plus(value, safe=""), json.dumps(value)[1:-1]}
    raw = value.encode()
    for data in (raw, raw + b":", b":" + raw):  # alone, as Basic user, as Basic password
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(data).decode("ascii")
            found.update((encoded, encoded.rstrip("=")))
    return {f for f in found if len(f) >= _MIN_SECRET_LENGTH}


def redact(text: str) -> str:
    """Return ``text`` with every registered secret replaced by ``MASK``."""
    pattern = _pattern
    if pattern is None or not text:
        return text
    return pattern.sub(MASK, text)


def exposes(text: str) -> bool:
    """Whether ``text`` shows a registered secret."""
    pattern = _pattern
    return pattern is not None and pattern.search(text) is not None


def truncate(text: str, limit: int) -> str:
    """``text`` with secrets masked, then cut to at most ``limit`` characters.

    Masking comes before the cut, so a secret straddling it is masked whole instead of leaving
    its first part; and a tail that is the start of a secret (the text was cut before it got
    here, as a capped read does) is dropped.
    """
    masked = redact(text)[:limit]
    return masked[: len(masked) - _partial_secret_at_end(masked)]


def _partial_secret_at_end(text: str) -> int:
    """The length of the longest start of a registered secret that ``text`` ends with."""
    longest = 0
    for form in _forms:
        for size in range(min(len(form) - 1, len(text)), max(longest, _MIN_SECRET_LENGTH - 1), -1):
            if text.endswith(form[:size]):
                longest = size
                break
    return longest


def redact_value(value: Any) -> Any:
    """``value`` with ``redact`` applied to every string in it (mappings, lists, tuples)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(redact_value(v) for v in value)
    return value


def looks_secret(name: str) -> bool:
    """Whether a setting, table key or log field called ``name`` holds a secret."""
    lowered = name.lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def mask(value: Any, secret: bool = False) -> Any:
    """``value`` as it may be shown: ``redact``-ed, and strings under secret names hidden.

    Walks mappings, lists and tuples. A string is replaced by ``MASK`` when ``secret`` is true
    or when it sits (at any depth) under a key that ``looks_secret``; other strings have
    registered secrets and URL passwords masked.
    """
    if isinstance(value, str):
        if secret and value:
            return MASK
        return _URL_PASSWORD.sub(rf"\g<1>{MASK}@", redact(value))
    if isinstance(value, bytes) and secret and value:
        return MASK
    if isinstance(value, Mapping):
        return {k: mask(v, secret or looks_secret(str(k))) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(mask(v, secret) for v in value)
    return value


class MaskedReprModel(BaseModel):
    """A pydantic model whose ``repr()`` and ``str()`` show every field through ``mask``.

    For models that hold secrets without ``SecretStr``: raw config tables, or a plugin's
    setting whose name says it is secret.
    """

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, mask(value, name is not None and looks_secret(name))


def secrets_in(model: BaseModel) -> Iterable[str]:
    """Yield the plain values of every ``SecretStr`` in ``model``, nested models included."""
    for name in type(model).model_fields:
        yield from _walk(getattr(model, name))


def _walk(value: Any) -> Iterable[str]:
    if isinstance(value, SecretStr):
        yield value.get_secret_value()
    elif isinstance(value, SecretBytes):
        yield value.get_secret_value().decode("utf-8", "replace")
    elif isinstance(value, BaseModel):
        yield from secrets_in(value)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _walk(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _walk(item)
