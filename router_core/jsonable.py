"""Turn event values into what JSON can carry, or refuse them with the path that is wrong.

Runs when an event is built, so a plugin, the outbox and any JSON encoder (the standard
library's, pydantic's, orjson) never meet a value they cannot serialise. The rules:

- strings must be valid Unicode: a lone surrogate (``"\\udcff"``) has no UTF-8 form;
- integers must lie in ``MIN_INT .. MAX_INT`` (signed and unsigned 64-bit, what orjson and the
  vendors' backends take); larger numbers must be sent as strings;
- floats must be finite; a ``Decimal`` is converted to a float and must stay finite;
- objects and arrays may be nested at most ``MAX_DEPTH`` levels, the field's own object being
  the first level (every encoder in use refuses somewhere past 250);
- object keys must be strings (ints, UUIDs and enums of those are converted).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

__all__ = [
    "MAX_DEPTH",
    "MAX_INT",
    "MIN_INT",
    "UnsendableValue",
    "brief",
    "check_int",
    "check_text",
    "plain_copy",
    "printable",
    "shape_problem",
    "to_jsonable",
]

MAX_DEPTH = 64
"""Deepest nesting of objects and arrays in properties, traits, context and integrations."""

MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
"""Integers outside ``MIN_INT .. MAX_INT`` are refused: orjson and the vendors cannot take them."""

_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsendableValue(ValueError):
    """A value JSON cannot carry: ``path`` says where, ``reason`` what is wrong with it."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def printable(text: str) -> str:
    """``text`` with lone surrogates written as ``\\udcff``: safe to encode, log and print."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def check_text(value: str, path: str) -> str:
    """``value`` when it is valid Unicode; ``UnsendableValue`` for a lone surrogate."""
    if value.isascii():
        return value
    found = _SURROGATE.search(value)
    if found is None:
        return value
    raise UnsendableValue(
        path,
        f"text holds a lone surrogate ({found.group()!r} at index {found.start()}), "
        "which has no UTF-8 form",
    )


def check_int(value: int, path: str) -> int:
    """``value`` when JSON consumers can take it; ``UnsendableValue`` otherwise."""
    if MIN_INT <= value <= MAX_INT:
        return value
    raise UnsendableValue(
        path,
        f"{brief(value)} is outside the accepted integer range -2**63 .. 2**64-1; "
        "send it as a string",
    )


def plain_copy(value: object) -> dict[str, Any] | None:
    """A copy of ``value`` when it is a flat dict of valid strings, numbers, booleans and None.

    That is most properties: this loop is the fast path of every event and costs a type check
    per item (``isascii()`` answers the surrogate question for nearly every string).
    ``to_jsonable`` would return the same dict, only slower. None means: use ``to_jsonable``,
    which converts what it can and names what it cannot.
    """
    if type(value) is not dict:
        return None
    for key, item in value.items():
        if type(key) is not str or not (key.isascii() or _SURROGATE.search(key) is None):
            return None
        kind = type(item)
        if kind is str:
            if not item.isascii() and _SURROGATE.search(item) is not None:
                return None
        elif kind is int:
            if not MIN_INT <= item <= MAX_INT:
                return None
        elif kind is float:
            if item - item != 0:  # NaN, infinities
                return None
        elif kind is not bool and item is not None:
            return None
    return dict(value)


def to_jsonable(value: Any, path: str) -> Any:
    """Return ``value`` with every nested value converted to a JSON type.

    datetime (naive is taken as UTC), date and time become ISO 8601 strings, Decimal a float,
    UUID a string, Enum its value, tuples/sets/frozensets lists, subclasses of str/int/float
    the plain type. Anything the module docstring's rules refuse raises ``UnsendableValue``
    naming the path, e.g. ``properties.items[2].price``. The recursion stops at ``MAX_DEPTH``
    levels, so no input (however deep, even one containing itself) exhausts the stack.
    """
    return _convert(value, path, 0)


def _plain(item: Any) -> bool:
    """True for the values most events hold, fine as they are: no path string is built."""
    kind = type(item)
    return (
        (kind is str and item.isascii())
        or (kind is int and MIN_INT <= item <= MAX_INT)
        or (kind is float and item - item == 0)
        or kind is bool
        or item is None
    )


def _convert(value: Any, path: str, depth: int) -> Any:
    """``value`` converted; ``depth`` is how many objects or arrays enclose it."""
    kind = type(value)
    if kind is dict or kind is list:  # before the scalars: the callers handled plain ones
        return _convert_container(value, path, depth)
    if kind is str:
        return check_text(value, path)
    if kind is int:
        return check_int(value, path)
    if kind is float:
        if value - value == 0:
            return value
        raise UnsendableValue(path, f"{value!r} is not a finite number; JSON cannot carry it")
    if kind is bool or value is None:
        return value
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return _convert_container(value, path, depth)
    if isinstance(value, Enum):
        return _convert(value.value, path, depth)
    if isinstance(value, datetime | date | time):
        return _isoformat(value, path)
    if isinstance(value, Decimal):
        number = float(value) if value.is_finite() else float("nan")
        if number - number == 0:
            return number
        raise UnsendableValue(
            path, f"{brief(value)} is not a finite number once converted; JSON cannot carry it"
        )
    if isinstance(value, UUID):
        return str(value)
    # Subclasses (other than bool and enums, handled above) as the plain type, checked alike.
    if isinstance(value, str):
        return check_text(str.__str__(value), path)
    if isinstance(value, int):
        return check_int(int.__int__(value), path)
    if isinstance(value, float):
        return _convert(float.__float__(value), path, depth)
    raise UnsendableValue(
        path,
        f"value of type {type(value).__name__} cannot be sent as JSON; "
        "convert it to a string, number, boolean, list or object first",
    )


def _convert_container(value: Any, path: str, depth: int) -> Any:
    if depth >= MAX_DEPTH:
        raise UnsendableValue(
            path, f"nested more than {MAX_DEPTH} levels deep (or contains itself); flatten it"
        )
    depth += 1
    if isinstance(value, Mapping):
        return _convert_mapping(value, path, depth)
    if isinstance(value, list | tuple):
        # Paths are written only for values that need more than the plain test.
        return [
            item if _plain(item) else _convert(item, f"{path}[{i}]", depth)
            for i, item in enumerate(value)
        ]
    items = [_convert(item, f"{path}[]", depth) for item in value]
    try:
        return sorted(items)  # sets have no order; sorting keeps payloads reproducible
    except TypeError:
        return items


def _convert_mapping(value: Mapping[Any, Any], path: str, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    count = 0
    for key, item in value.items():
        name = key if type(key) is str and key.isascii() else _key(key, path)
        out[name] = item if _plain(item) else _convert(item, f"{path}.{name}", depth)
        count += 1
    if len(out) != count:  # two keys became one string (1 and "1"): one value would be lost
        seen: dict[str, Any] = {}
        for key in value:
            name = key if type(key) is str else _key(key, path)
            if name in seen:
                raise UnsendableValue(
                    path, f"keys {brief(seen[name])} and {brief(key)} are the same in JSON"
                )
            seen[name] = key
    return out


def _key(key: Any, path: str) -> str:
    """An object key as a string: strings as they are, ints, UUIDs and enums converted."""
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, str):
        text = str.__str__(key)
        if text.isascii() or _SURROGATE.search(text) is None:
            return text
        raise UnsendableValue(path, f"key {brief(key)} holds a lone surrogate")
    if isinstance(key, int) and not isinstance(key, bool):
        if MIN_INT <= key <= MAX_INT:
            return str(int.__int__(key))
        raise UnsendableValue(path, f"key {brief(key)} is outside -2**63 .. 2**64-1")
    if isinstance(key, UUID):
        return str(key)
    raise UnsendableValue(path, f"key {brief(key)} must be a string")


def _isoformat(value: datetime | date | time, path: str) -> str:
    try:
        if isinstance(value, datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        text = value.isoformat()
    except (ValueError, OverflowError, TypeError) as exc:  # a tzinfo giving impossible offsets
        raise UnsendableValue(path, f"{type(value).__name__} cannot be written: {exc}") from None
    if type(text) is not str:
        raise UnsendableValue(path, f"{type(value).__name__}.isoformat() did not return a string")
    return check_text(text, path)


def brief(value: object) -> str:
    """A short description of ``value`` for an error message, never the whole of a huge one."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        digits = int(value.bit_length() * 0.30103) + 1
        return f"an integer of about {digits} digits"
    try:
        text = repr(value)
    except Exception:  # repr of a huge or deeply nested key can itself fail
        return f"a {type(value).__name__}"
    text = printable(text)
    return text if len(text) <= 60 else f"{text[:57]}..."


def shape_problem(value: Any, max_depth: int, path: str) -> str | None:
    """What is wrong with the shape of a config-like ``value``, or None.

    Problems: a dict or list nested more than ``max_depth`` levels (``value`` itself is level
    1), a key that is not a string. Iterative, so any depth is safe to check; paths are
    written only for the answer (keys of any type, even huge ints, are described).
    """
    # Each entry: the item, its level, and (parent's trail, key, in_mapping) for its path.
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while stack:
        item, level, trail = stack.pop()
        if not isinstance(item, Mapping | list | tuple):
            continue
        if level > max_depth:
            return f"{path}{_trail_path(trail)}: nested more than {max_depth} levels deep"
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{path}{_trail_path(trail)}: key {brief(key)} must be a string"
                stack.append((child, level + 1, (trail, key, True)))
        else:
            stack.extend((child, level + 1, (trail, i, False)) for i, child in enumerate(item))
    return None


def _trail_path(trail: tuple[Any, ...]) -> str:
    parts: list[str] = []
    while trail:
        trail, key, in_mapping = trail
        parts.append(f".{printable(key)}" if in_mapping else f"[{key}]")
    return "".join(reversed(parts))
