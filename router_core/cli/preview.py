"""``event-router preview``: the request body each destination would receive, sent nowhere."""

from __future__ import annotations

import dataclasses
from typing import TextIO

import click

from router_core.cli import send
from router_core.cli.errors import EXIT_OK
from router_core.cli.options import plugin_registry, setup_logging
from router_core.cli.output import console, event_title, print_json
from router_core.config import RouterConfig
from router_core.preview import Preview
from router_core.router import Router

__all__ = ["preview"]


def _preview(
    event_type: str | None,
    file: TextIO | None,
    config_path: str,
    as_json: bool,
    verbose: bool,
    **fields: str | None,
) -> int:
    events = send.read_events(event_type, file, fields)
    config = RouterConfig.load(config_path, plugins=plugin_registry())
    setup_logging(verbose, config.logging)
    # Direct mode whatever [queue] says: a preview touches no outbox.
    with Router(dataclasses.replace(config, queue=None), plugins=plugin_registry()) as router:
        previews = [router.preview(event) for event in events]
    if as_json:
        print_json(
            [
                {"message_id": event.message_id, "destinations": [p.to_dict() for p in found]}
                for event, found in zip(events, previews, strict=True)
            ]
        )
    else:
        for event, found in zip(events, previews, strict=True):
            _print_human(event_title(event), found)
    return EXIT_OK


def _print_human(title: str, previews: list[Preview]) -> None:
    out = console()
    out.print(f"[bold]{title}", markup=True, highlight=False)
    for p in previews:
        head = f"{p.destination} ({p.plugin})"
        if p.skipped is not None:
            out.print(f"  {head}: skipped, {p.skipped}", markup=False, highlight=False)
            continue
        if p.error is not None:
            out.print(f"  {head}: would fail: {p.error}", markup=False, highlight=False)
        for request in p.requests:
            out.print(f"  {head}: {request.method} {request.url}", markup=False, highlight=False)
            # The body exactly as it would be sent (one line), never reformatted.
            click.echo(request.body)


preview = click.Command(
    "preview",
    callback=_preview,
    # The same options as send: the same event, previewed instead of sent.
    params=list(send.send.params),
    help=(
        "Show the request body each destination would receive, after routing, consent and "
        "transforms, sending nothing.\n\n\b\nevent-router preview --event 'Order Completed' "
        "--user-id user_12345\nevent-router preview --file events.jsonl --json"
    ),
)
