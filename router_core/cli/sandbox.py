"""``event-router sandbox`` (local Segment + PostHog emulators) and ``event-router demo``."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from router_core.cli.errors import EXIT_FAILED, EXIT_OK, BadInput
from router_core.cli.options import json_option, plugin_registry, setup_logging, verbose_option
from router_core.cli.output import (
    console,
    key_value_table,
    print_json,
    report_rows,
    results_table,
)
from router_core.cli.run import print_job_result, run_job
from router_core.events import Event
from router_core.examples import examples_dir
from router_core.jobs import Job, JobResult
from router_core.results import SendReport
from router_core.router import Router
from router_core.sandbox import ReceivedEvent, Sandbox

__all__ = ["demo", "sandbox"]

SANDBOX_WRITE_KEY = "sandbox_write_key"
SANDBOX_API_KEY = "phc_sandbox_project_key"
SEED_JOBS = ("segment_track_event.toml", "posthog_capture_event.toml")


# -- sandbox ----------------------------------------------------------------------------------


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--segment-port", type=click.IntRange(0, 65535), default=0, help="0: a free port.")
@click.option("--posthog-port", type=click.IntRange(0, 65535), default=0, help="0: a free port.")
@click.option("--viewer-port", type=click.IntRange(0, 65535), default=0, help="0: a free port.")
@click.option("--write-key", help="Accept only this Segment write key (default: any key).")
@click.option("--api-key", help="Accept only this PostHog project key (default: any phc_ key).")
@json_option
def sandbox(  # noqa: PLR0917 - one parameter per command-line option
    host: str,
    segment_port: int,
    posthog_port: int,
    viewer_port: int,
    write_key: str | None,
    api_key: str | None,
    as_json: bool,
) -> int:
    """Run local Segment and PostHog emulators until Ctrl-C.

    Prints their URLs, the viewer's URL (GET /_events for JSON), and the environment variables
    and config that point an app at them. No account, no key, no network.
    """
    if api_key is not None and api_key.startswith("phx_"):
        raise BadInput("--api-key: phx_ keys are personal keys, which capture refuses; use phc_")
    sb = Sandbox(
        host=host,
        segment_port=segment_port,
        posthog_port=posthog_port,
        viewer_port=viewer_port,
        write_keys={write_key} if write_key else None,
        api_keys={api_key} if api_key else None,
    )
    try:
        sb.start()
    except OSError as exc:
        raise BadInput(
            f"cannot listen on {host}: {exc.strerror or exc} (pick other ports, or 0 for free ones)"
        ) from None
    with sb:
        env = sandbox_env(sb, write_key or SANDBOX_WRITE_KEY, api_key or SANDBOX_API_KEY)
        if as_json:
            # One line, flushed: a supervising process can read it before the server blocks.
            click.echo(
                json.dumps(
                    {
                        "segment_url": sb.segment.url,
                        "posthog_url": sb.posthog.url,
                        "viewer_url": sb.viewer_url,
                        "env": env,
                    }
                )
            )
        else:
            _print_sandbox(sb, env)
        _flush_stdout()
        with _sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
            sb.serve_forever()  # until Ctrl-C (or SIGTERM from a supervisor)
    if not as_json:
        click.echo("sandbox stopped", err=True)
    return EXIT_OK


def sandbox_env(sb: Sandbox, write_key: str, api_key: str) -> dict[str, str]:
    """The variables the seed jobs and ``config/router.toml`` read, pointed at ``sb``."""
    return {
        "SEGMENT_WRITE_KEY": write_key,
        "SEGMENT_HOST": sb.segment.url,
        "POSTHOG_API_KEY": api_key,
        "POSTHOG_HOST": sb.posthog.url,
    }


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C so a supervisor's stop also shuts the servers down cleanly."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _flush_stdout() -> None:
    sys.stdout.flush()


def _print_sandbox(sb: Sandbox, env: Mapping[str, str]) -> None:
    out = console()
    out.print(
        key_value_table(
            [
                ("Segment", f"{sb.segment.url}  (POST /v1/batch, /v1/track, ...)"),
                ("PostHog", f"{sb.posthog.url}  (POST /batch/, /i/v0/e/, ...)"),
                ("Viewer", f"{sb.viewer_url}  (JSON: {sb.viewer_url}/_events)"),
            ],
            title="event-router sandbox",
        )
    )
    out.print(Text("\nPoint an app or a job at it:", style="bold"))
    for name, value in env.items():
        out.print(Text(f"  export {name}={value}"))
    out.print(Text("\nor in config/router.toml:", style="bold"))
    out.print(Text(ROUTER_SNIPPET))
    out.print(Text("Press Ctrl-C to stop.", style="dim"))


ROUTER_SNIPPET = """\
  [destinations.segment]
  plugin = "segment"
  write_key = "${SEGMENT_WRITE_KEY}"
  host = "${SEGMENT_HOST}"

  [destinations.posthog]
  plugin = "posthog"
  api_key = "${POSTHOG_API_KEY}"
  host = "${POSTHOG_HOST}"
"""


# -- demo -------------------------------------------------------------------------------------


@click.command()
@click.option(
    "--jobs-dir",
    type=click.Path(file_okay=False),
    help="Where the seed jobs are (default: the ones that ship with event-router).",
)
@json_option
@verbose_option
def demo(jobs_dir: str | None, as_json: bool, verbose: bool) -> int:
    """Show event-router end to end on this machine: no key, no network.

    Starts the Segment and PostHog emulators on free loopback ports, runs both seed jobs
    against them, then sends one event of each type (track, identify, page, screen, group,
    alias) to both destinations through the real plugins over HTTP, and shows what each
    emulator received. Exit 0 when everything was delivered.
    """
    jobs = [Job.load(path) for path in _seed_job_paths(jobs_dir)]
    setup_logging(verbose)
    registry = plugin_registry()
    with Sandbox(host="127.0.0.1", segment_port=0, posthog_port=0, viewer_port=0) as sb:
        # The jobs read the environment; give them a copy so os.environ is never changed.
        env = {**os.environ, **sandbox_env(sb, SANDBOX_WRITE_KEY, SANDBOX_API_KEY)}
        job_results = [run_job(job, env=env, plugins=registry) for job in jobs]
        with Router(DEMO_DESTINATIONS, plugins=registry, env=env) as router:
            events = demo_events()
            reports = [router.send(event) for event in events]
        received = {"segment": list(sb.segment.events), "posthog": list(sb.posthog.events)}
        urls = {
            "segment_url": sb.segment.url,
            "posthog_url": sb.posthog.url,
            "viewer_url": sb.viewer_url,
        }

    outcome = DemoOutcome(urls, job_results, events, reports, received)
    if as_json:
        print_json(outcome.to_dict())
    else:
        _print_demo(outcome)
    return EXIT_OK if outcome.ok else EXIT_FAILED


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    """Everything the demo did: job results, the six events' reports, what arrived where."""

    urls: Mapping[str, str]
    job_results: list[JobResult]
    events: list[Event]
    reports: list[SendReport]
    received: Mapping[str, list[ReceivedEvent]]

    @property
    def not_received(self) -> dict[str, list[str]]:
        """Message ids of demo events an emulator did not get (the plugins send message_id as
        Segment's messageId and PostHog's uuid)."""
        missing: dict[str, list[str]] = {}
        for vendor, items in self.received.items():
            got = {item.message_id for item in items}
            lost = [e.message_id for e in self.events if e.message_id not in got]
            if lost:
                missing[vendor] = lost
        return missing

    @property
    def ok(self) -> bool:
        return (
            all(r.ok for r in self.job_results)
            and all(r.ok for r in self.reports)
            and not self.not_received
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            **self.urls,
            "jobs": [r.to_dict() for r in self.job_results],
            "events": [
                {"type": e.type, **r.to_dict()}
                for e, r in zip(self.events, self.reports, strict=True)
            ],
            "received": {
                vendor: [_received_row(item) for item in items]
                for vendor, items in self.received.items()
            },
            "not_received": self.not_received,
        }


DEMO_DESTINATIONS: dict[str, dict[str, Any]] = {
    "segment": {
        "plugin": "segment",
        "write_key": "${SEGMENT_WRITE_KEY}",
        "host": "${SEGMENT_HOST}",
    },
    "posthog": {
        "plugin": "posthog",
        "api_key": "${POSTHOG_API_KEY}",
        "host": "${POSTHOG_HOST}",
    },
}


def demo_events() -> list[Event]:
    """One event of each of the six types, as an app would send them."""
    user = "user_12345"
    return [
        Event.track(
            "Order Completed",
            user_id=user,
            properties={"order_id": "order_67890", "total": 99.99, "currency": "USD"},
        ),
        Event.identify(user_id=user, traits={"email": "ada@example.com", "plan": "pro"}),
        Event.page(
            "Pricing",
            user_id=user,
            category="Marketing",
            properties={"url": "https://example.com/pricing"},
        ),
        Event.screen("Checkout", user_id=user, properties={"step": 2}),
        Event.group("company_42", user_id=user, traits={"name": "Example Inc", "employees": 40}),
        Event.alias(previous_id="anon_7f3a", user_id=user),
    ]


def _seed_job_paths(jobs_dir: str | None) -> list[Path]:
    examples = examples_dir()
    if jobs_dir is not None:
        directory = Path(jobs_dir)
    elif examples is not None:
        directory = examples / "jobs"  # shipped with the package: any working directory works
    else:
        raise BadInput("this installation has no seed jobs; pass --jobs-dir")
    paths = [directory / name for name in SEED_JOBS]
    if not all(p.is_file() for p in paths):
        raise BadInput(
            f"seed jobs ({', '.join(SEED_JOBS)}) not found in {directory}; pass --jobs-dir"
        )
    return paths


def _received_row(item: ReceivedEvent) -> dict[str, Any]:
    return {
        "vendor": item.vendor,
        "type": item.type,
        "event": item.event,
        "distinct_id": item.distinct_id,
        "message_id": item.message_id,
    }


def _print_demo(outcome: DemoOutcome) -> None:
    out = console()
    out.print(
        key_value_table(
            [
                ("Segment emulator", outcome.urls["segment_url"]),
                ("PostHog emulator", outcome.urls["posthog_url"]),
                ("Viewer", outcome.urls["viewer_url"]),
            ],
            title="event-router demo: local emulators, no key, no network",
        )
    )
    for result in outcome.job_results:
        out.print()
        print_job_result(result)
    out.print()
    rows = [
        row
        for event, report in zip(outcome.events, outcome.reports, strict=True)
        for row in report_rows(report, label=event.type)
    ]
    out.print(results_table(rows, title="One event of each type, to both destinations"))
    out.print()
    out.print(_received_table(outcome.received))
    for vendor, ids in outcome.not_received.items():
        out.print(Text(f"{vendor} did not receive: {', '.join(ids)}", style="red"))
    out.print()
    if outcome.ok:
        out.print(Text("Everything was delivered.", style="bold green"))
    else:
        out.print(Text("Some deliveries failed (see above).", style="bold red"))


def _received_table(received: Mapping[str, list[ReceivedEvent]]) -> Table:
    table = Table(title="What the emulators received", title_justify="left", title_style="bold")
    table.add_column("vendor", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("event", overflow="fold")
    table.add_column("message id", no_wrap=True)
    for items in received.values():
        for item in items:
            table.add_row(item.vendor, item.type, item.event or "", item.message_id)
    return table
