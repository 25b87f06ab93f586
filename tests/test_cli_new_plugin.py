"""``event-router new-plugin`` writes a plugin distribution that passes its own tests at once."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from click.testing import CliRunner

from router_core.cli import main
from router_core.cli.scaffold import core_range
from tests.test_plugin_imports import _core_imports


def test_scaffolded_plugin_passes_its_own_tests(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["new-plugin", "acme-crm", "--dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    root = tmp_path / "event-router-acme-crm"
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["event_router"] == {"acme_crm": "event_router_acme_crm"}
    assert core_range() in project["dependencies"]
    module = root / "event_router_acme_crm" / "__init__.py"
    assert {m for _, m, _ in _core_imports(module)} == {"router_core"}
    # Run from the scaffold (not installed: that would leak into this test session).
    env = {**os.environ, "PYTHONPATH": str(root)}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "5 passed" in run.stdout


def test_bad_name_and_existing_directory_are_refused(tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(main, ["new-plugin", "Acme CRM", "--dir", str(tmp_path)])
    assert bad.exit_code == 2
    assert "must be lower-case" in bad.output
    assert runner.invoke(main, ["new-plugin", "acme", "--dir", str(tmp_path)]).exit_code == 0
    again = runner.invoke(main, ["new-plugin", "acme", "--dir", str(tmp_path)])
    assert again.exit_code == 2
    assert "already exists" in again.output


def test_core_range_is_the_compatible_release() -> None:
    assert core_range("0.1.4") == "event-router>=0.1,<0.2"
    assert core_range("1.2.0") == "event-router>=1.2,<2"
