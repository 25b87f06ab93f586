"""``event-router sandbox`` (local Segment + PostHog emulators) and ``event-router demo``."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

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

F = TypeVar("F", bound=Callable[..., object])


# -- sandbox ----------------------------------------------------------------------------------

_MAX_PORT = 65535


@dataclass(frozen=True, slots=True)
class SandboxPorts:
    """Where the viewer and the two emulators listen (0: a free port)."""

    viewer: int
    segment: int
    posthog: int

    @classmethod
    def resolve(
        cls, port: int, segment: int | None, posthog: int | None, viewer: int | None
    ) -> SandboxPorts:
        """``--port N``: the viewer on N, Segment on N+1, PostHog on N+2; each of
        ``--viewer-port``, ``--segment-port``, ``--posthog-port`` overrides its own."""
        if port + 2 > _MAX_PORT:
            raise BadInput(
                f"--port {port}: the sandbox uses {port}, {port + 1} and {port + 2}; "
                f"pick a port up to {_MAX_PORT - 2}"
            )

        def pick(given: int | None, offset: int) -> int:
            if given is not None:
                return given
            return port + offset if port else 0

        ports = cls(viewer=pick(viewer, 0), segment=pick(segment, 1), posthog=pick(posthog, 2))
        fixed = [p for p in (ports.viewer, ports.segment, ports.posthog) if p]
        if len(fixed) != len(set(fixed)):
            raise BadInput(
                f"the viewer, Segment and PostHog need three different ports, got {ports.viewer}, "
                f"{ports.segment} and {ports.posthog}"
            )
        return ports

    def describe(self) -> str:
        """The ports as a user asked for them, for an error message."""
        shown = [
            f"{name} {port or 'any'}"
            for name, port in (
                ("viewer", self.viewer),
                ("Segment", self.segment),
                ("PostHog", self.posthog),
            )
        ]
        return ", ".join(shown)


def port_option(func: F) -> F:
    """``--port N``: the viewer on N, the Segment emulator on N+1, PostHog on N+2."""
    return click.option(
        "--port",
        type=click.IntRange(0, _MAX_PORT),
        default=0,
        show_default=True,
        help="Viewer on this port, Segment on the next, PostHog on the one after "
        "(0: free ports, new on every start).",
    )(func)


def start_sandbox(host: str, ports: SandboxPorts, **keys: Any) -> Sandbox:
    """A started ``Sandbox``; a port already in use is a ``BadInput`` naming the ports."""
    sb = Sandbox(
        host=host,
        segment_port=ports.segment,
        posthog_port=ports.posthog,
        viewer_port=ports.viewer,
        **keys,
    )
    try:
        sb.start()
    except OSError as exc:
        raise BadInput(
            f"cannot listen on {host} ({ports.describe()}): {exc.strerror or exc} "
            "(pick other ports, or 0 for free ones)"
        ) from None
    return sb


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@port_option
@click.option("--segment-port", type=click.IntRange(0, _MAX_PORT), help="Segment emulator's port.")
@click.option("--posthog-port", type=click.IntRange(0, _MAX_PORT), help="PostHog emulator's port.")
@click.option("--viewer-port", type=click.IntRange(0, _MAX_PORT), help="Viewer page's port.")
@click.option("--write-key", help="Accept only this Segment write key (default: any key).")
@click.option("--api-key", help="Accept only this PostHog project key (default: any phc_ key).")
@json_option
def sandbox(  # noqa: PLR0917 - one parameter per command-line option
    host: str,
    port: int,
    segment_port: int | None,
    posthog_port: int | None,
    viewer_port: int | None,
    write_key: str | None,
    api_key: str | None,
    as_json: bool,
) -> int:
    """Run local Segment and PostHog emulators and their live page until Ctrl-C.

    Prints the page's URL and the `export` lines that point an app or a job at the emulators.
    `--port 8080` keeps the ports stable across restarts. No account, no network.
    """
    if api_key is not None and api_key.startswith("phx_"):
        raise BadInput("--api-key: phx_ keys are personal keys, which capture refuses; use phc_")
    ports = SandboxPorts.resolve(port, segment_port, posthog_port, viewer_port)
    sb = start_sandbox(
        host,
        ports,
        write_keys={write_key} if write_key else None,
        api_keys={api_key} if api_key else None,
    )
    with sb, _stopped_by_interrupt():
        env = sandbox_env(sb, write_key or SANDBOX_WRITE_KEY, api_key or SANDBOX_API_KEY)
        if as_json:
            # One line, flushed: a supervising process can read it before the server blocks.
            click.echo(json.dumps({**sandbox_urls(sb), "env": env}))
        else:
            _print_sandbox(sb, env, stable=bool(ports.segment and ports.posthog))
        _flush_stdout()
        sb.serve_forever()
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


def sandbox_urls(sb: Sandbox) -> dict[str, str]:
    """The running sandbox's URLs, as ``--json`` prints them."""
    return {
        "segment_url": sb.segment.url,
        "posthog_url": sb.posthog.url,
        "viewer_url": sb.viewer_url,
    }


def export_lines(env: Mapping[str, str]) -> list[str]:
    """Shell lines to paste: the hosts on one, the keys on the other (values quoted)."""

    def line(*names: str) -> str:
        return "export " + " ".join(f"{name}={shlex.quote(env[name])}" for name in names)

    return [line("SEGMENT_HOST", "POSTHOG_HOST"), line("SEGMENT_WRITE_KEY", "POSTHOG_API_KEY")]


@contextlib.contextmanager
def _stopped_by_interrupt() -> Iterator[None]:
    """Ctrl-C (or SIGTERM from a supervisor) ends the block quietly.

    Entered before the URLs are printed: a supervisor may stop us as soon as it has read them.
    """
    with _sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
        yield


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


def _print_sandbox(sb: Sandbox, env: Mapping[str, str], *, stable: bool) -> None:
    out = console()
    out.print(
        key_value_table(
            [
                ("Viewer", f"{sb.viewer_url}/  (live page: open it in a browser)"),
                ("Segment", f"{sb.segment.url}  (POST /v1/batch, /v1/track, ...)"),
                ("PostHog", f"{sb.posthog.url}  (POST /batch/, /i/v0/e/, ...)"),
            ],
            title="event-router sandbox",
        )
    )
    _print_exports(env)
    if not stable:
        out.print(Text("The ports change on every start; --port 8080 keeps them.", style="dim"))
    out.print(Text("\nor in config/router.toml:", style="bold"))
    out.print(Text(ROUTER_SNIPPET))
    out.print(Text("Press Ctrl-C to stop.", style="dim"))


def _print_exports(env: Mapping[str, str]) -> None:
    out = console()
    out.print(Text("\nPaste into a shell to point an app or a job at it:", style="bold"))
    for line in export_lines(env):
        out.print(Text(f"  {line}"))


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
@click.option(
    "--keep",
    is_flag=True,
    help="Keep the emulators and their live page up afterwards, until Ctrl-C.",
)
@port_option
@json_option
@verbose_option
def demo(jobs_dir: str | None, keep: bool, port: int, as_json: bool, verbose: bool) -> int:
    """Show event-router end to end on this machine: no key, no network.

    Starts the Segment and PostHog emulators on loopback, runs both seed jobs against them,
    then sends one event of each type (track, identify, page, screen, group, alias) to both
    destinations through the real plugins over HTTP, and shows what each emulator received.
    `--keep` leaves the emulators and their live page up until Ctrl-C. Exit 0 when everything
    was delivered.
    """
    jobs = [Job.load(path) for path in _seed_job_paths(jobs_dir)]
    ports = SandboxPorts.resolve(port, None, None, None)
    setup_logging(verbose)
    registry = plugin_registry()
    with start_sandbox("127.0.0.1", ports) as sb:
        # The jobs read the environment; give them a copy so os.environ is never changed.
        sandbox_vars = sandbox_env(sb, SANDBOX_WRITE_KEY, SANDBOX_API_KEY)
        env = {**os.environ, **sandbox_vars}
        job_results = [run_job(job, env=env, plugins=registry) for job in jobs]
        with Router(DEMO_DESTINATIONS, plugins=registry, env=env) as router:
            events = demo_events()
            reports = [router.send(event) for event in events]
        received = {"segment": list(sb.segment.events), "posthog": list(sb.posthog.events)}
        # Without --keep the servers stop before anything is printed: no URL is shown then.
        urls = sandbox_urls(sb) if keep else {}
        outcome = DemoOutcome(urls, job_results, events, reports, received)
        if keep:
            with _stopped_by_interrupt():
                _show_demo(outcome, as_json)
                if not as_json:
                    _print_kept(sb, sandbox_vars)
                _flush_stdout()
                sb.serve_forever()
            if not as_json:
                click.echo("sandbox stopped", err=True)
    if not keep:
        _show_demo(outcome, as_json)
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _show_demo(outcome: DemoOutcome, as_json: bool) -> None:
    if as_json:
        print_json(outcome.to_dict())
    else:
        _print_demo(outcome)


def _print_kept(sb: Sandbox, env: Mapping[str, str]) -> None:
    out = console()
    out.print()
    out.print(
        key_value_table(
            [
                ("Viewer", f"{sb.viewer_url}/  (live page: open it in a browser)"),
                ("Segment", sb.segment.url),
                ("PostHog", sb.posthog.url),
            ],
            title="Kept up until Ctrl-C",
        )
    )
    _print_exports(env)
    out.print(Text("Press Ctrl-C to stop.", style="dim"))


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    """Everything the demo did: job results, the six events' reports, what arrived where."""

    urls: Mapping[str, str]
    """The sandbox's URLs while it is kept up (``--keep``); empty once it has stopped."""
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
            "kept": bool(self.urls),
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
    out.print(Text("event-router demo: local emulators, no key, no network", style="bold"))
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
    if not outcome.urls:
        out.print(
            Text(
                "The emulators have stopped. `event-router demo --keep` keeps them and their "
                "live page up until Ctrl-C.",
                style="dim",
            )
        )


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
