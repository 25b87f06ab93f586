"""``event-router new-plugin NAME``: a destination plugin distribution that passes its tests.

The plugin it writes is built on the plugin kit (``post_events``) and imports only from
``router_core``, like the in-tree plugins; its tests use respx and
``router_core.testing.destination()``.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from string import Template

import click

from router_core.cli.errors import EXIT_OK, BadInput
from router_core.http import LIBRARY_VERSION

__all__ = ["core_range", "new_plugin", "scaffold"]

_NAME = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
# Template file (in router_core/cli/templates) -> where it goes; $module is the package name.
_FILES = {
    "pyproject.toml.tmpl": "pyproject.toml",
    "README.md.tmpl": "README.md",
    "plugin.py.tmpl": "$module/__init__.py",
    "test_plugin.py.tmpl": "tests/test_$name.py",
}


def core_range(version: str = LIBRARY_VERSION) -> str:
    """The compatible core range a new plugin depends on: ``event-router>=0.1,<0.2`` for 0.1.x."""
    major, minor = (int(part) for part in version.split(".")[:2])
    upper = f"{major}.{minor + 1}" if major == 0 else f"{major + 1}"
    return f"event-router>={major}.{minor},<{upper}"


def scaffold(name: str, parent: Path) -> Path:
    """Write the ``event-router-NAME`` distribution under ``parent``; return its directory."""
    if not _NAME.fullmatch(name):
        raise BadInput(
            f"plugin name {name!r} must be lower-case letters and digits, words joined by - or _ "
            "(e.g. acme or acme-crm)"
        )
    entry = name.replace("-", "_")
    values = {
        "name": entry,
        "dist": f"event-router-{name.replace('_', '-')}",
        "module": f"event_router_{entry}",
        "title": "".join(word.capitalize() for word in re.split(r"[-_]", name)),
        "core": core_range(),
    }
    target = parent / values["dist"]
    if target.exists():
        raise BadInput(f"{target} already exists; choose another --dir or name")
    templates = resources.files("router_core.cli") / "templates"
    for source, dest in _FILES.items():
        path = target / Template(dest).substitute(values)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template((templates / source).read_text(encoding="utf-8")).substitute(values)
        path.write_text(text, encoding="utf-8")
    (target / values["module"] / "py.typed").write_text("", encoding="utf-8")
    return target


@click.command("new-plugin")
@click.argument("name")
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Directory to create the plugin's distribution in.",
)
def new_plugin(name: str, parent: Path) -> int:
    """Scaffold a destination plugin distribution (pyproject, module, tests, README)."""
    target = scaffold(name, parent)
    click.echo(f"Created {target}")
    click.echo(f"  cd {target} && pip install -e '.[test]' && pytest")
    return EXIT_OK
