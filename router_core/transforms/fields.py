"""``drop`` and ``allow``: remove values by glob path, or keep only those named."""

from __future__ import annotations

from typing import Any

from router_core.transforms.paths import DELETE, PathSet
from router_core.transforms.settings import AllowSettings, DropSettings
from router_core.transforms.step import Fields

__all__ = ["Allow", "Drop"]


def _delete(_: Any) -> Any:
    return DELETE


class Drop:
    """The ``drop`` transform: every value at a matching path is removed."""

    __slots__ = ("_paths",)

    def __init__(self, settings: DropSettings) -> None:
        self._paths = PathSet.parse(settings.paths)

    def __call__(self, fields: Fields) -> Fields:
        return self._paths.update(fields, _delete)


class Allow:
    """The ``allow`` transform: inside each object its paths name, only matches are kept.

    ``paths = ["properties.plan"]`` empties ``properties`` but for ``plan`` and leaves
    ``context`` and ``traits`` alone.
    """

    __slots__ = ("_paths",)

    def __init__(self, settings: AllowSettings) -> None:
        self._paths = PathSet.parse(settings.paths)

    def __call__(self, fields: Fields) -> Fields:
        return self._paths.keep(fields)
