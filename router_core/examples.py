"""Where the example config and the seed jobs are, in a wheel or in a source checkout.

They are written once, in ``config/`` at the top of the source tree (``router.toml`` and
``jobs/*.toml``); a wheel carries that directory as ``router_core/data`` (see pyproject.toml).
So ``event-router demo`` finds its jobs from any working directory, installed or not.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["examples_dir"]


def examples_dir() -> Path | None:
    """The directory holding ``router.toml`` and ``jobs/``, or ``None`` if this installation
    has neither a packaged copy nor a source tree beside it."""
    packaged = resources.files("router_core").joinpath("data")
    if isinstance(packaged, Path) and packaged.is_dir():  # installed from a wheel
        return packaged
    root = Path(__file__).resolve().parent.parent  # a checkout (editable installs included)
    if (root / "pyproject.toml").is_file() and (root / "config").is_dir():
        return root / "config"
    return None
