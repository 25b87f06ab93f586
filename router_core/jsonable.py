"""Turn property values into what JSON can carry, or refuse them with the path that is wrong.

Runs when an event is built, so a plugin never meets a value it cannot serialise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

__all__ = ["to_jsonable"]

_SCALARS = (str, int, bool, type(None))


def to_jsonable(value: Any, path: str) -> Any:
    """Return ``value`` with every nested value converted to a JSON type.

    datetime (naive is taken as UTC), date and time become ISO 8601 strings, Decimal a float,
    UUID a string, Enum its value, tuples/sets/frozensets lists. NaN, infinities, bytes and
    any other object raise ``ValueError`` naming ``path``.
    """
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise ValueError(f"{path}: {value!r} is not a finite number; JSON cannot carry it")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str):
                name = key
            elif isinstance(key, int | Enum | UUID) and not isinstance(key, bool):
                name = str(key.value if isinstance(key, Enum) else key)
            else:
                raise ValueError(f"{path}: key {key!r} must be a string")
            out[name] = to_jsonable(item, f"{path}.{name}")
        return out
    if isinstance(value, list | tuple):
        return [to_jsonable(item, f"{path}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(item, f"{path}[]") for item in value]
        try:
            return sorted(items)  # sets have no order; sorting keeps payloads reproducible
        except TypeError:
            return items
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        if value.is_finite():
            return float(value)
        raise ValueError(f"{path}: {value!r} is not a finite number; JSON cannot carry it")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Enum):
        return to_jsonable(value.value, path)
    raise ValueError(
        f"{path}: value of type {type(value).__name__} cannot be sent as JSON; "
        "convert it to a string, number, boolean, list or object first"
    )
