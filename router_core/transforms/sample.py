"""``sample``: keep a fraction of users, the same users in every process and run.

A user's place in ``[0, 1)`` is the first 8 bytes of SHA-256 over the salt and the user's id
(``user_id``, else ``anonymous_id``): never ``random`` or ``hash()``, which differ between
runs. A user is kept when that place is below ``rate``, so every event of one user goes the
same way, and with one salt a smaller rate keeps a subset of the users a larger one keeps.
A different salt picks different users.

An anonymous visitor who later signs in is placed by ``anonymous_id`` before and by
``user_id`` after, and may land on the other side; sample after ``pseudonymize`` and the
pseudonyms place users instead, with the same effect.
"""

from __future__ import annotations

import hashlib

from router_core.transforms.settings import SampleSettings
from router_core.transforms.step import Fields

__all__ = ["Sample", "sample_position"]

_SCALE = 2**64


def _place(distinct_id: str, salt: str) -> int:
    digest = hashlib.sha256(f"{salt}\x00{distinct_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def sample_position(distinct_id: str, salt: str = "") -> float:
    """Where ``distinct_id`` falls in ``[0, 1)``: kept by every ``rate`` above it."""
    return _place(distinct_id, salt) / _SCALE


class Sample:
    """The ``sample`` transform."""

    __slots__ = ("_salt", "_threshold")

    def __init__(self, settings: SampleSettings) -> None:
        self._salt = settings.salt
        self._threshold = int(settings.rate * _SCALE)  # rate 1 keeps everyone, 0 no one

    def __call__(self, fields: Fields) -> Fields | None:
        distinct_id = fields.get("user_id") or fields.get("anonymous_id") or ""
        return fields if _place(distinct_id, self._salt) < self._threshold else None
