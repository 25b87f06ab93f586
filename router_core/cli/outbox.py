"""``event-router outbox``: look at the queued-delivery outbox, replay dead letters, purge,
and create or upgrade a PostgreSQL outbox's schema (``migrate``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from router_core.cli.errors import EXIT_FAILED, EXIT_OK, BadInput, CommandGroup
from router_core.cli.options import config_option, json_option, plugin_registry
from router_core.cli.output import console, print_json
from router_core.config import RouterConfig, interpolate
from router_core.dburl import mask_url
from router_core.outbox import STATES, Outbox, OutboxStats, QueueSettings
from router_core.outbox.backends import get_backend
from router_core.router import Router

__all__ = ["outbox"]

_POLL_S = 0.2
_COPY_CHUNK = 1000  # events per transaction when copying an outbox

_config = config_option("The router config whose [queue] names the outbox.")


@click.group(cls=CommandGroup)
def outbox() -> None:
    """Inspect the outbox of queued delivery: status, replay dead letters, purge, migrate."""


def _settings(config_path: str) -> tuple[RouterConfig, QueueSettings]:
    config = RouterConfig.load(config_path)
    settings = config.queue_settings()
    if settings is None:
        raise BadInput(
            f"{config_path} has no [queue] table (or it has enabled = false): "
            "events are delivered directly and there is no outbox"
        )
    if not get_backend(settings.backend).durable:
        raise BadInput(
            f'{config_path}: [queue] backend = "{settings.backend}" keeps the outbox in the '
            "sending process's memory; only a durable outbox (sqlite, postgresql, ...) can be "
            "inspected from outside"
        )
    return config, settings


def _location(settings: QueueSettings) -> str:
    if settings.url is not None:
        where = mask_url(settings.url.get_secret_value())
        return (
            f"{where} (schema {settings.schema_name})" if settings.backend == "postgres" else where
        )
    return str(Path(settings.path).absolute())


def _existing(settings: QueueSettings) -> Outbox | None:
    """The outbox, opened; ``None`` when nothing has created it yet (it is not created here,
    for engines that can tell). A path that can never hold one, or a file that is not one, is
    an ``OutboxUnavailableError`` (exit 2) saying why."""
    backend = get_backend(settings.backend)
    if backend.open_existing is None:
        return backend.open(settings)
    return backend.open_existing(settings)


@outbox.command()
@_config
@json_option
def status(config_path: str, as_json: bool) -> int:
    """Counts per destination and state: pending, retrying, in flight, dead."""
    _, settings = _settings(config_path)
    store = _existing(settings)
    if store is None:
        stats = OutboxStats()
    else:
        try:
            stats = store.stats(time.time())
        finally:
            store.close()
    location = _location(settings)
    if as_json:
        print_json(_stats_json(location, store is not None, stats))
        return EXIT_OK
    out = console()
    if store is None:
        out.print(f"no outbox at {location} yet: nothing has been queued")
        return EXIT_OK
    out.print(_stats_table(location, stats))
    summary = f"{stats.events:,} event(s) stored, {stats.bytes:,} bytes"
    if stats.oldest_pending is not None:
        summary += f"; oldest undelivered accepted {_age(stats.oldest_pending)} ago"
    out.print(summary)
    if stats.dead_tuples:
        listed = ", ".join(f"{table} {count:,}" for table, count in stats.dead_tuples.items())
        out.print(f"dead tuples (row versions VACUUM has yet to reclaim): {listed}")
    if stats.workers:
        out.print(_workers_table(stats))
    dead = stats.total("dead")
    if dead:
        out.print(
            Text(
                f"{dead:,} dead letter(s): 'event-router outbox replay' retries them",
                style="yellow",
            )
        )
    return EXIT_OK


@outbox.command()
@_config
@click.option("--destination", "destination", default=None, help="Replay only this destination.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="Seconds to wait for the replayed events to be delivered.",
)
@json_option
def replay(config_path: str, destination: str | None, timeout: float, as_json: bool) -> int:
    """Move dead letters back to pending and deliver them (with a progress bar)."""
    config, settings = _settings(config_path)
    existing = _existing(settings)
    if existing is None:
        raise BadInput(f"no outbox at {_location(settings)}: nothing to replay")
    existing.close()  # the router opens its own
    router = Router.from_config(config, plugins=plugin_registry(), queue=settings)
    try:
        names = router.destinations
        if destination is not None and destination not in names:
            raise BadInput(
                f"--destination {destination!r} is not an enabled destination of "
                f"{config_path}; choose from {', '.join(names) or 'none'}"
            )
        chosen = [destination] if destination is not None else names
        store = router.outbox
        assert store is not None  # queued mode: settings came from [queue]
        moved = sum(store.replay(name, time.time()) for name in chosen)
        left = _deliver_with_progress(router, chosen, timeout, show=not as_json)
        dead = store.dead_counts(chosen)
    finally:
        router.close(timeout=0)
    delivered_all = not any(left.values()) and not any(dead.values())
    if as_json:
        print_json({"replayed": moved, "pending": left, "dead": dead, "ok": delivered_all})
    else:
        out = console()
        out.print(f"replayed {moved:,} dead letter(s)")
        for name in chosen:
            line = f"  {name}: {left[name]:,} still pending, {dead[name]:,} dead"
            out.print(Text(line, style="green" if not (left[name] or dead[name]) else "red"))
    return EXIT_OK if delivered_all else EXIT_FAILED


def _deliver_with_progress(
    router: Router, names: list[str], timeout: float, *, show: bool
) -> dict[str, int]:
    store = router.outbox
    assert store is not None
    total = sum(store.pending(names).values())
    deadline = time.monotonic() + timeout
    progress = Progress(
        TextColumn("delivering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not show,
    )
    with progress:
        task = progress.add_task("replay", total=total)
        while True:
            result = router.flush(timeout=min(_POLL_S, max(deadline - time.monotonic(), 0)))
            left = {name: result.pending.get(name, 0) for name in names}
            progress.update(task, completed=total - sum(left.values()))
            if result.complete or time.monotonic() >= deadline:
                return left


@outbox.command()
@_config
@click.option("--dead-only", is_flag=True, help="Delete dead letters only (keep pending rows).")
@click.option("--destination", "destination", default=None, help="Only this destination's rows.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
def purge(
    config_path: str, dead_only: bool, destination: str | None, yes: bool, as_json: bool
) -> int:
    """Delete rows from the outbox: dead letters, or everything (undelivered events too)."""
    _, settings = _settings(config_path)
    store = _existing(settings)
    if store is None:
        if as_json:
            print_json({"purged": 0})
        else:
            console().print(f"no outbox at {_location(settings)}: nothing to purge")
        return EXIT_OK
    try:
        what = "dead letters" if dead_only else "ALL rows, undelivered events included,"
        scope = f" of {destination}" if destination else ""
        if not yes and not _confirm(f"Delete {what}{scope} from {store.location}?"):
            click.echo("nothing deleted", err=True)
            return EXIT_FAILED
        removed = store.purge(dead_only=dead_only, destination=destination)
    finally:
        store.close()
    if as_json:
        print_json({"purged": removed})
    else:
        console().print(f"deleted {removed:,} row(s)")
    return EXIT_OK


@outbox.command()
@_config
@json_option
def migrate(config_path: str, as_json: bool) -> int:
    """Create the PostgreSQL outbox's schema, or upgrade it to this version (idempotent)."""
    _, settings = _settings(config_path)
    if settings.backend != "postgres" or settings.url is None:
        raise BadInput(
            f"{config_path}: [queue] is a {settings.backend} outbox; migrate is for a "
            'PostgreSQL one (url = "postgresql://..."). A SQLite file is created and checked '
            "when it is opened"
        )
    from router_core.outbox.postgres import migrate_schema  # noqa: PLC0415

    location, result = migrate_schema(settings.url.get_secret_value(), settings.schema_name)
    if as_json:
        print_json({"outbox": location, **result.to_dict()})
    elif result.previous is None:
        console().print(f"created the outbox (schema version {result.version}) at {location}")
    elif result.changed:
        console().print(
            f"upgraded the outbox at {location} from schema version {result.previous} "
            f"to {result.version}"
        )
    else:
        console().print(f"the outbox at {location} is up to date (schema version {result.version})")
    return EXIT_OK


@outbox.command()
@config_option()
@click.option(
    "--to",
    "target_url",
    required=True,
    metavar="URL",
    help="The PostgreSQL outbox to copy into: postgresql://... (${VAR} is expanded).",
)
@click.option(
    "--schema",
    "target_schema",
    default=None,
    help="The target's schema (default: the config's [queue] schema).",
)
@json_option
def copy(config_path: str, target_url: str, target_schema: str | None, as_json: bool) -> int:
    """Copy every pending and dead row of this outbox into a PostgreSQL one (SQLite to
    PostgreSQL without losing queued events). Stop the senders and workers first."""
    _, settings = _settings(config_path)
    missing: list[str] = []
    url = str(interpolate(target_url, os.environ, "--to", missing))
    if missing:
        raise BadInput("; ".join(missing))
    target_settings = QueueSettings.model_validate(
        {"url": url, "schema": target_schema or settings.schema_name}
    )
    if target_settings.backend != "postgres":
        raise BadInput(
            f"--to must be a postgresql:// URL (the outbox to copy into); got {mask_url(url)}"
        )
    source = _existing(settings)
    if source is None:
        raise BadInput(f"no outbox at {_location(settings)}: nothing to copy")
    from router_core.outbox.postgres import PostgresOutbox  # noqa: PLC0415

    try:
        target = PostgresOutbox(url, schema=target_settings.schema_name)
        try:
            if target.high_water() and target.stats(time.time()).events:
                raise BadInput(
                    f"the outbox {target.location} already holds events: copy into an empty "
                    "one, so that nothing is copied twice"
                )
            copied = after = 0
            while batch := source.export(after, _COPY_CHUNK):
                copied += target.import_events(batch)
                after = batch[-1].id
        finally:
            target.close()
    finally:
        source.close()
    if as_json:
        print_json({"copied": copied, "from": _location(settings), "to": target.location})
    else:
        console().print(
            f"copied {copied:,} event(s) with their pending and dead rows from "
            f"{_location(settings)} to {target.location}; once workers deliver from it, "
            "purge the old one (event-router outbox purge)"
        )
    return EXIT_OK


def _confirm(question: str) -> bool:
    try:
        return click.confirm(question, default=False)
    except click.Abort:  # no terminal to answer on
        return False


def _stats_json(location: str, exists: bool, stats: OutboxStats) -> dict[str, Any]:
    return {
        "outbox": location,
        "exists": exists,
        "destinations": {
            name: {state: counts.get(state, 0) for state in STATES}
            for name, counts in stats.counts.items()
        },
        "events": stats.events,
        "bytes": stats.bytes,
        "oldest_pending": stats.oldest_pending,
        "dead_tuples": dict(stats.dead_tuples),
        "workers": [
            {
                "id": w.id,
                "host": w.host,
                "pid": w.pid,
                "destinations": list(w.destinations),
                "started": w.started,
                "last_seen": w.last_seen,
                "delivered": w.delivered,
                "failed": w.failed,
                "stopped": w.stopped,
            }
            for w in stats.workers
        ],
    }


def _stats_table(location: str, stats: OutboxStats) -> Table:
    table = Table(title=f"outbox {location}", title_justify="left", title_style="bold")
    table.add_column("destination", no_wrap=True)
    for state in STATES:
        table.add_column(state.replace("_", " "), justify="right", no_wrap=True)
    for name, counts in stats.counts.items():
        cells: list[str | Text] = [name]
        for state in STATES:
            count = counts.get(state, 0)
            style = "red" if state == "dead" and count else ""
            cells.append(Text(f"{count:,}", style=style))
        table.add_row(*cells)
    if not stats.counts:
        table.add_row("(empty)", *["0"] * len(STATES))
    return table


def _workers_table(stats: OutboxStats) -> Table:
    table = Table(title="workers (heartbeats)", title_justify="left", title_style="bold")
    for column in ("worker", "destinations", "started", "last seen", "delivered", "failed"):
        table.add_column(column, justify="right" if column in ("delivered", "failed") else "left")
    for w in stats.workers:
        seen = "stopped" if w.stopped else f"{_age(w.last_seen)} ago"
        table.add_row(
            f"{w.host} pid {w.pid}",
            ", ".join(w.destinations),
            f"{_age(w.started)} ago",
            Text(seen, style="dim" if w.stopped else ""),
            f"{w.delivered:,}",
            Text(f"{w.failed:,}", style="yellow" if w.failed else ""),
        )
    return table


def _age(accepted_at: float) -> str:
    seconds = max(time.time() - accepted_at, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
