"""What every built-in transform is: a function of an event's fields.

Built-ins read and write the fields as a mapping (``event.__dict__``, never changed in place)
so that several of them in a row cost one validation at the end, not one each, and a
transform that changes nothing returns the very mapping it got: no copy, no validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, TypeAlias

__all__ = ["FieldStep", "Fields"]

Fields: TypeAlias = Mapping[str, Any]
"""An event's fields by name (``user_id``, ``properties``, ...); read-only."""


class FieldStep(Protocol):
    """A built-in transform, built from its settings."""

    def __call__(self, fields: Fields) -> Fields | None:
        """The changed fields (the same mapping when unchanged), or ``None`` to drop."""
        ...
