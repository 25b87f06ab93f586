"""``event-router plugins``: every installed plugin, what it provides, and who uses it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from router_core.cli.errors import EXIT_OK
from router_core.cli.options import DEFAULT_CONFIG, config_option, json_option, plugin_registry
from router_core.cli.output import console, print_json
from router_core.config import RouterConfig
from router_core.plugins import PluginInfo
from router_core.settings.problems import did_you_mean

__all__ = ["plugins"]


@click.command()
@config_option(
    f"Show which destinations of this config use each plugin (default: {DEFAULT_CONFIG} "
    "when it exists).",
    default=None,
)
@json_option
def plugins(config_path: str | None, as_json: bool) -> int:
    """List installed plugins: name, distribution, version, hooks, and load errors.

    A plugin that failed to load is listed with its error; the command still exits 0.
    """
    if config_path is None and Path(DEFAULT_CONFIG).is_file():
        config_path = DEFAULT_CONFIG
    config = RouterConfig.load(config_path) if config_path is not None else None
    uses = _plugin_of_destinations(config.destinations) if config is not None else {}
    infos = plugin_registry().infos()
    installed = {info.name for info in infos}
    rows = [_row(info, uses) for info in infos]
    unknown = {dest: plugin for dest, plugin in uses.items() if plugin not in installed}
    unmatched = plugin_registry().unmatched()  # EVENT_ROUTER_PLUGINS entries with no plugin

    if as_json:
        print_json(
            {
                "config": config_path,
                "plugins": rows,
                "destinations_without_plugin": unknown,
                "problems": unmatched,
            }
        )
        return EXIT_OK
    out = console()
    if not rows:
        out.print("no plugins installed (entry-point group 'event_router')")
    else:
        if config_path is not None:
            out.print(Text(f"config: {config_path}", style="dim"))
        for row in rows:
            _print_plugin(row, with_uses=config is not None)
    for dest, plugin in unknown.items():
        guess = did_you_mean(plugin, installed)
        out.print(
            Text(f"destination {dest!r} names plugin {plugin!r}, which is not installed{guess}")
        )
    for line in unmatched:
        out.print(Text(line, style="yellow"))
    return EXIT_OK


def _plugin_of_destinations(destinations: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    return {
        name: str(table.get("plugin", ""))
        for name, table in destinations.items()
        if table.get("plugin")
    }


def _row(info: PluginInfo, uses: Mapping[str, str]) -> dict[str, Any]:
    return {
        "name": info.name,
        "loaded": info.loaded,
        "distribution": info.distribution,
        "version": info.version,
        "module": info.module,
        "hooks": list(info.hooks),
        "destination_type": info.name if info.loaded else None,
        "used_by": [dest for dest, plugin in uses.items() if plugin == info.name],
        "error": info.error,
    }


def _print_plugin(row: dict[str, Any], with_uses: bool) -> None:
    """One block per plugin: readable at any terminal width."""
    out = console()
    status = (
        Text("loaded", style="green")
        if row["loaded"]
        else Text(f"failed to load: {row['error']}", style="bold red")
    )
    out.print(Text.assemble((row["name"], "bold"), "  ", status))
    package = " ".join(part for part in (row["distribution"], row["version"]) if part)
    pairs = [
        ("distribution", package or "(registered in-process)"),
        ("module", row["module"] or ""),
        ("hooks", ", ".join(row["hooks"])),
        ("destination type", row["destination_type"] or "(none: not loaded)"),
    ]
    if with_uses:
        pairs.append(("used by", ", ".join(row["used_by"]) or "(no configured destination)"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(f"  {name}", value)
    out.print(grid)
