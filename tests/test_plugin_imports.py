"""The in-tree plugins use only ``router_core``'s public face, as a third party's would.

Every module of every plugin package (and the README's example plugin) may import
``from router_core import ...`` and nothing from a ``router_core.<submodule>``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import router_core

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_FILES = sorted(
    [
        *ROOT.glob("plugins/*/event_router_*/**/*.py"),
        *ROOT.glob("tests/fixtures/webhook_plugin/**/*.py"),
    ]
)


def _core_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import of router_core or one of its submodules."""
    found: list[tuple[int, str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] == "router_core":
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "router_core":
                    found.append((node.lineno, alias.name, []))
    return found


def test_there_are_plugin_files_to_check() -> None:
    packages = {p.relative_to(ROOT).parts[:3] for p in PLUGIN_FILES}
    assert ("plugins", "segment", "event_router_segment") in packages
    assert ("plugins", "posthog", "event_router_posthog") in packages
    assert any(
        p.is_relative_to(ROOT / "tests" / "fixtures" / "webhook_plugin") for p in PLUGIN_FILES
    )


@pytest.mark.parametrize("path", PLUGIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plugins_import_only_from_router_core_itself(path: Path) -> None:
    for line, module, names in _core_imports(path):
        where = f"{path.relative_to(ROOT)}:{line}"
        assert module == "router_core", f"{where} imports {module}; use `from router_core import`"
        missing = [name for name in names if name not in router_core.__all__]
        assert not missing, f"{where} imports {missing}, which router_core does not export"


def test_the_check_catches_a_submodule_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import router_core.http\nfrom router_core.kit import post_events\n")
    assert [m for _, m, _ in _core_imports(sample)] == ["router_core.http", "router_core.kit"]
