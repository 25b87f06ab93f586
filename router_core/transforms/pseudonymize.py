"""``pseudonymize``: replace ids and named values by keyed hashes (HMAC-SHA256).

A pseudonym is ``h1:<key_id>:<64 hex digits>``, the HMAC-SHA256 of the value's UTF-8 bytes
under the key. The format says what it is, so nothing downstream mistakes it for a raw id:

- ``h1`` names the scheme (HMAC-SHA256, this layout), so a later scheme can coexist;
- ``key_id`` names the key, so after a rotation old and new pseudonyms are told apart (and a
  person seen under both can be mapped) instead of silently colliding into a new identity;
- the whole 256-bit digest is kept: truncating would invite collisions between users.

Only the value is hashed, never the field name, so one user's id gives the same pseudonym as
``user_id``, ``anonymous_id``, ``previous_id`` or a trait: ``alias`` and ``identify`` still
link the same people, and PostHog's person merging keeps working. The same value and key give
the same pseudonym in every process and destination.

``None`` and ``""`` stay as they are (an absent id must not become one shared pseudonym); any
other non-string value (number, boolean, list, object) is written as compact JSON with sorted
keys first, so ``42`` hashes as ``"42"``, exactly as an integer ``user_id`` does.
"""

from __future__ import annotations

import hmac
import json
from typing import Any

from router_core.secrets import register_secret
from router_core.transforms.paths import PathSet
from router_core.transforms.settings import PseudonymizeSettings
from router_core.transforms.step import Fields

__all__ = ["SCHEME", "Pseudonymize", "pseudonym"]

SCHEME = "h1"


def pseudonym(value: str, key: str | bytes, key_id: str) -> str:
    """The pseudonym of ``value``: ``h1:<key_id>:<hex HMAC-SHA256(key, value)>``.

    Apps can call it to find a person by the id a destination received.
    """
    secret = key.encode() if isinstance(key, str) else key
    digest = hmac.digest(secret, value.encode(), "sha256").hex()  # one-shot: the fast path
    return f"{SCHEME}:{key_id}:{digest}"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class Pseudonymize:
    """The ``pseudonymize`` transform."""

    __slots__ = ("_key", "_key_id", "_paths")

    def __init__(self, settings: PseudonymizeSettings) -> None:
        secret = settings.key.get_secret_value()
        register_secret(secret)
        self._key = secret.encode()
        self._key_id = settings.key_id
        self._paths = PathSet.parse(settings.fields)

    def __repr__(self) -> str:
        return f"Pseudonymize(key_id={self._key_id!r})"

    def _hash(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        return pseudonym(_as_text(value), self._key, self._key_id)

    def __call__(self, fields: Fields) -> Fields:
        return self._paths.update(fields, self._hash)
