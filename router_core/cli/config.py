"""``event-router config check``: load and validate a config, listing every problem at once."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from router_core.cli.errors import EXIT_BAD_INPUT, EXIT_OK
from router_core.cli.options import DEFAULT_CONFIG, json_option, plugin_registry
from router_core.cli.output import console, print_json
from router_core.config import DestinationConfig, RouterConfig
from router_core.errors import ConfigError

__all__ = ["config"]


@click.group()
def config() -> None:
    """Inspect the router config."""


@config.command()
@click.argument("path", default=DEFAULT_CONFIG, type=click.Path(dir_okay=False))
@json_option
def check(path: str, as_json: bool) -> int:
    """Validate PATH (default: config/router.toml) against the installed plugins.

    Resolves ${VAR} from the environment and reports every problem: unknown plugins, bad or
    unknown settings, missing environment variables. Exit 2 when there is any.
    """
    try:
        loaded = RouterConfig.load(path)
        resolved = loaded.resolve(plugin_registry())
    except ConfigError as exc:
        return _report_problems(path, exc)
    disabled = [name for name in loaded.destinations if name not in {d.name for d in resolved}]
    if as_json:
        print_json(
            {
                "ok": True,
                "config": path,
                "destinations": [_destination(d) for d in resolved],
                "disabled": disabled,
                "problems": [],
            }
        )
        return EXIT_OK
    out = console()
    if resolved:
        out.print(_table(resolved))
    else:
        out.print("no enabled destinations: events would go nowhere")
    if disabled:
        out.print(f"disabled: {', '.join(disabled)}")
    out.print(Text(f"{path}: OK", style="green"))
    return EXIT_OK


def _report_problems(path: str, exc: ConfigError) -> int:
    count = len(exc.problems)
    ctx = click.get_current_context()
    if ctx.params.get("as_json"):
        print_json({"ok": False, "config": path, "destinations": [], "problems": exc.problems})
    else:
        out = console()
        out.print(Text(f"{path}: {count} problem{'s' if count != 1 else ''}", style="bold red"))
        for problem in exc.problems:
            out.print(Text(f"  - {problem}"))
    noun = f"{count} problem{'s' if count != 1 else ''}"
    listed = f": {'; '.join(exc.problems)}" if ctx.params.get("as_json") else " (listed above)"
    click.echo(f"error: {noun} in {path}{listed}", err=True)
    return EXIT_BAD_INPUT


def _destination(destination: DestinationConfig) -> dict[str, Any]:
    routing = destination.routing
    return {
        "name": destination.name,
        "plugin": destination.plugin,
        "events": list(routing.events) if routing.events is not None else None,
        "types": list(routing.types) if routing.types is not None else None,
        "timeout": routing.timeout,
        "max_attempts": routing.retry.max_attempts,
        # mode="json" renders SecretStr values as "**********".
        "settings": destination.settings.model_dump(mode="json"),
    }


def _table(resolved: list[DestinationConfig]) -> Table:
    table = Table(title="Enabled destinations", title_justify="left", title_style="bold")
    table.add_column("destination", no_wrap=True)
    table.add_column("plugin", no_wrap=True)
    table.add_column("receives", overflow="fold")
    table.add_column("settings", overflow="fold")
    for destination in resolved:
        row = _destination(destination)
        filters = []
        if row["events"] is not None:
            filters.append(f"events: {', '.join(row['events'])}")
        if row["types"] is not None:
            filters.append(f"types: {', '.join(row['types'])}")
        settings = [f"{k} = {v}" for k, v in row["settings"].items() if v is not None]
        settings += [f"timeout = {row['timeout']:g}s", f"max_attempts = {row['max_attempts']}"]
        table.add_row(
            row["name"],
            row["plugin"],
            "\n".join(filters) or "all events",
            "\n".join(settings),
        )
    return table
