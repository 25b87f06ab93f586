"""``router_core`` is the one public face: what it exports is exactly what ``__all__`` lists."""

from __future__ import annotations

import inspect
import types

import router_core


def test_all_is_sorted_and_complete() -> None:
    exported = {
        name
        for name, value in vars(router_core).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }

    # isort-style, as ruff keeps it: CONSTANTS, then Classes, then functions.
    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert sorted(router_core.__all__, key=order) == router_core.__all__
    assert set(router_core.__all__) == exported


def test_every_export_is_documented_and_defined_by_the_package() -> None:
    for name in router_core.__all__:
        value = getattr(router_core, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert (value.__doc__ or "").strip(), f"{name} has no docstring"
            module = getattr(value, "__module__", "")
            assert module.startswith("router_core."), f"{name} comes from {module}"
