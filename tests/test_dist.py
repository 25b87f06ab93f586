"""The three distributions install like real packages.

Wheels and sdists of the core and both plugins are built (as ``make dist`` does, each wheel from
its sdist), then installed in a fresh virtualenv outside the checkout, where ``event-router
demo`` must run from an unrelated directory: its jobs ship inside the wheel. pip fetches the
dependencies from the package index; nothing comes from this checkout or its virtualenv.
``-m "not dist"`` leaves these tests out when offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from router_core import __version__

pytestmark = pytest.mark.dist

ROOT = Path(__file__).parents[1]
PROJECTS = {
    "event_router": ROOT,
    "event_router_segment": ROOT / "plugins" / "segment",
    "event_router_posthog": ROOT / "plugins" / "posthog",
}


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    for project in PROJECTS.values():
        # --no-isolation: the build backend (hatchling) is already installed with the test
        # extra; `make dist` builds the same way in isolated environments.
        done = subprocess.run(
            [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return out


def wheel(dist: Path, name: str) -> Path:
    (path,) = dist.glob(f"{name}-*.whl")
    return path


def sdist(dist: Path, name: str) -> Path:
    (path,) = dist.glob(f"{name}-*.tar.gz")
    return path


def metadata(wheel_path: Path) -> dict[str, list[str]]:
    with zipfile.ZipFile(wheel_path) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        message = Parser().parsestr(zf.read(name).decode())
    fields: dict[str, list[str]] = {}
    for key, value in message.items():
        fields.setdefault(key, []).append(value)
    return fields


@pytest.mark.parametrize("name", PROJECTS)
def test_each_sdist_carries_its_tests_and_the_license(dist: Path, name: str) -> None:
    with tarfile.open(sdist(dist, name)) as tf:
        members = {m.split("/", 1)[1] for m in tf.getnames() if "/" in m}
        license_text = tf.extractfile(
            next(m for m in tf.getmembers() if m.name.endswith("/LICENSE"))
        )
        assert license_text is not None
        assert license_text.read() == (ROOT / "LICENSE").read_bytes()
    assert "pyproject.toml" in members
    assert any(m.startswith("tests/test_") for m in members), sorted(members)
    assert not any(m.startswith("plugins/") for m in members)  # plugins are their own sdists


def test_the_core_wheel_ships_the_example_config_and_seed_jobs(dist: Path) -> None:
    with zipfile.ZipFile(wheel(dist, "event_router")) as zf:
        names = set(zf.namelist())
        for source in (ROOT / "config").rglob("*.toml"):
            packaged = "router_core/data/" + source.relative_to(ROOT / "config").as_posix()
            assert packaged in names
            assert zf.read(packaged) == source.read_bytes()  # the same file, not a copy
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    fields = metadata(wheel(dist, "event_router"))
    assert fields["Version"] == [__version__]
    assert fields["License-Expression"] == ["MIT"]
    assert {url.split(",")[0] for url in fields["Project-URL"]} >= {
        "Homepage",
        "Documentation",
        "Issues",
        "Changelog",
    }


@pytest.mark.parametrize("name", ["event_router_segment", "event_router_posthog"])
def test_plugins_depend_on_a_core_range_this_core_is_in(dist: Path, name: str) -> None:
    fields = metadata(wheel(dist, name))
    (core,) = [Requirement(r) for r in fields["Requires-Dist"] if r.startswith("event-router")]
    assert core.name == "event-router"
    assert core.specifier.contains(__version__)
    assert not core.specifier.contains("1.0")  # an upper bound: a breaking core is not taken
    assert any(
        n.endswith(".dist-info/licenses/LICENSE")
        for n in zipfile.ZipFile(wheel(dist, name)).namelist()
    )


def test_the_version_is_written_once() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"]
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["hatch"]["version"]["path"] == "router_core/_version.py"


def test_the_wheels_install_and_the_demo_runs_outside_the_checkout(
    dist: Path, tmp_path: Path
) -> None:
    venv = tmp_path / "venv"
    # No pip inside (ensurepip alone takes longer than the rest): this pip installs into it.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    assert "include-system-site-packages = false" in (venv / "pyvenv.cfg").read_text()
    python = venv / "bin" / "python"
    wheels = [str(wheel(dist, name)) for name in PROJECTS]
    install = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
            "--disable-pip-version-check", "--no-compile", *wheels,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stdout + install.stderr

    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}
        and not key.startswith("EVENT_ROUTER_")
    }
    env["COLUMNS"] = "200"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, cwd=elsewhere, env=env, capture_output=True, text=True, check=False, timeout=120
        )

    where = run(str(python), "-c", "import router_core; print(router_core.__file__)")
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(venv)  # not this checkout

    version = run(str(venv / "bin" / "event-router"), "--version")
    assert version.returncode == 0, version.stderr
    assert __version__ in version.stdout

    demo = run(str(venv / "bin" / "event-router"), "demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Everything was delivered." in demo.stdout
    assert "Segment Track Event" in demo.stdout  # the seed jobs came from the wheel
