"""``event-router run JOB_FILE``: run a job file (one event, its destinations, its response)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import click

from router_core.cli.errors import EXIT_FAILED, EXIT_OK
from router_core.cli.options import json_option, plugin_registry, setup_logging, verbose_option
from router_core.cli.output import event_title, print_json, print_report, print_response
from router_core.jobs import Job, JobResult, parse_override
from router_core.plugins import PluginRegistry

__all__ = ["print_job_result", "run", "run_job"]


@click.command()
@click.argument("job_file", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="PATH=VALUE",
    help="Override an input field, e.g. --set properties.total=12 (VALUE is JSON when it "
    "parses, else a string). Repeatable.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 100),
    help="Cap every destination's delivery attempts (retries included).",
)
@json_option
@verbose_option
def run(
    job_file: str,
    assignments: tuple[str, ...],
    max_attempts: int | None,
    as_json: bool,
    verbose: bool,
) -> int:
    """Run a job file and print its response (exit 1 when a destination failed).

    \b
    SEGMENT_WRITE_KEY=... event-router run config/jobs/segment_track_event.toml
    event-router run config/jobs/segment_track_event.toml --set properties.total=12
    """
    job = Job.load(job_file)
    overrides = [parse_override(text) for text in assignments]
    setup_logging(verbose, job.logging)
    result = run_job(job, overrides=overrides, max_attempts=max_attempts)
    if as_json:
        print_json(result.response)
    else:
        print_job_result(result)
    return EXIT_OK if result.ok else EXIT_FAILED


def run_job(
    job: Job,
    *,
    env: Mapping[str, str] | None = None,
    overrides: list[tuple[tuple[str, ...], Any]] | None = None,
    max_attempts: int | None = None,
    plugins: PluginRegistry | None = None,
) -> JobResult:
    """Run ``job`` with the command line's plugins: the one path ``run`` and ``demo`` share."""
    return job.run(
        env=env,
        plugins=plugins if plugins is not None else plugin_registry(),
        overrides=overrides or (),
        max_attempts=max_attempts,
    )


def print_job_result(result: JobResult) -> None:
    """The destinations' results table, then the job's response."""
    print_report(result.report, title=f"{result.job.name}: {event_title(result.event)}")
    print_response(f"Response ({result.job.response_destination}):", result.response)
