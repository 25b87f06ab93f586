"""``event-router config check``: load and validate a config, listing every problem at once."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table
from rich.text import Text

from router_core.cli.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    BadInput,
    CommandGroup,
    describe,
    error_json,
)
from router_core.cli.options import config_option, json_option, plugin_registry
from router_core.cli.output import console, print_json
from router_core.config import DestinationConfig, RouterConfig
from router_core.errors import ConfigError

__all__ = ["config"]


@click.group(cls=CommandGroup)
def config() -> None:
    """Inspect the router config."""


@config.command(short_help="Validate a config against the installed plugins.")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@config_option()
@json_option
def check(path: str | None, config_path: str, as_json: bool) -> int:
    """Validate the config (PATH or -c/--config; default: $EVENT_ROUTER_CONFIG, else
    config/router.toml) against the installed plugins.

    Resolves ${VAR} from the environment and reports every problem at once: unknown tables,
    plugins and settings, bad values, missing environment variables. Exit 2 when there is any.
    """
    if (
        path is not None
        and click.get_current_context().get_parameter_source("config_path")
        is click.core.ParameterSource.COMMANDLINE
        and path != config_path
    ):
        raise BadInput(f"two configs given ({path} and --config {config_path}); give one")
    path = path if path is not None else config_path
    try:
        registry = plugin_registry()
        loaded = RouterConfig.load(path, plugins=registry)  # every problem, in one error
        resolved = loaded.resolve(registry)
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
        print_json(
            {
                **error_json(describe(exc), EXIT_BAD_INPUT, exc.problems),
                "config": path,
                "destinations": [],
            }
        )
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
