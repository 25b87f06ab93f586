"""Installing one of the fixture plugin distributions for a test module, as pip would."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


@contextmanager
def installed_distribution(fixture: str, target: Path, module: str) -> Iterator[Path]:
    """pip-install ``fixtures/<fixture>`` into ``target`` and put it on ``sys.path`` (its entry
    points become visible); undone afterwards, ``module`` forgotten."""
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
            "--no-build-isolation", "--target", str(target), str(FIXTURES / fixture),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    try:
        yield target
    finally:
        sys.path.remove(str(target))
        sys.modules.pop(module, None)
