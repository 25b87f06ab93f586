"""``event-router worker``: deliver from a shared outbox, as a process of its own.

Run any number of them, on any number of machines, against one PostgreSQL outbox (or a few on
one machine against a SQLite file): claims with leases make sure no batch is sent by two of
them. A worker sends nothing itself. SIGTERM or SIGINT stops claiming, lets the batches in
flight finish for up to ``[queue] close_timeout`` seconds, releases what is left for another
worker, and exits 0. A worker killed outright holds its batches until their lease
(``[queue] lease``) runs out; then another worker delivers them.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import threading
import time
import uuid
from types import FrameType
from typing import Any

import click

from router_core.cli.errors import EXIT_OK, BadInput
from router_core.cli.options import json_option, plugin_registry, verbose_option
from router_core.cli.output import print_json
from router_core.config import RouterConfig
from router_core.logs import LOG_FORMAT_ENV_VAR, LOG_LEVEL_ENV_VAR, configure_logging, get_logger
from router_core.outbox import Outbox, QueuedDelivery
from router_core.outbox.backends import get_backend
from router_core.outbox.store import WorkerInfo
from router_core.router import Router

__all__ = ["worker"]

HEARTBEAT_S = 2.0
"""How often a worker records its counts in the outbox (``outbox status`` shows them)."""
SUMMARY_S = 60.0
"""How often a worker logs a summary line at info while it runs (and once as it exits)."""


@click.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    default="config/router.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The router config: its [queue] names the outbox, its destinations where to send.",
)
@click.option(
    "--destination",
    "only",
    multiple=True,
    metavar="NAME",
    help="Deliver only this destination (repeatable; default: every enabled one).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Batches this worker delivers at once per destination.",
)
@json_option
@verbose_option
def worker(
    config_path: str, only: tuple[str, ...], concurrency: int, as_json: bool, verbose: bool
) -> int:
    """Deliver queued events from the outbox until SIGTERM or SIGINT (exit 0).

    \b
    event-router worker -c config/router.toml
    event-router worker -c config/router.toml --destination segment --concurrency 4
    """
    config = RouterConfig.load(config_path, plugins=plugin_registry())
    _logging(config, verbose)
    settings = config.queue_settings()
    if settings is None:
        raise BadInput(
            f"{config_path} has no [queue] table (or it has enabled = false): there is no "
            "outbox for a worker to deliver from"
        )
    if not get_backend(settings.backend).durable:
        raise BadInput(
            f'{config_path}: [queue] backend = "{settings.backend}" lives in the sending '
            "process; a worker needs an outbox it can share (sqlite, postgresql, ...)"
        )
    if only:
        unknown = sorted(set(only) - set(config.destinations))
        if unknown:
            raise BadInput(
                f"--destination {', '.join(unknown)}: not a destination of {config_path}; "
                f"choose from {', '.join(config.destinations) or 'none'}"
            )
        config = dataclasses.replace(
            config, destinations={n: t for n, t in config.destinations.items() if n in only}
        )
    # Built not to deliver (nothing starts in the constructor), then started with our tasks.
    router = Router(
        config, plugins=plugin_registry(), queue=settings.model_copy(update={"deliver": False})
    )
    queue = router._queue
    assert queue is not None
    assert router.outbox is not None
    stop = threading.Event()
    previous = {sig: signal.signal(sig, _setter(stop)) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        summary = _run(
            router,
            queue=queue,
            outbox=router.outbox,
            concurrency=concurrency,
            stop=stop,
            grace=settings.close_timeout,
        )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if as_json:
        print_json(summary)
    return EXIT_OK


def _run(
    router: Router,
    *,
    queue: QueuedDelivery,
    outbox: Outbox,
    concurrency: int,
    stop: threading.Event,
    grace: float,
) -> dict[str, Any]:
    log = get_logger("event_router.worker")
    info = WorkerInfo(
        id=f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        host=socket.gethostname(),
        pid=os.getpid(),
        destinations=tuple(router.destinations),
    )
    started = time.monotonic()
    try:
        queue.deliver_here(concurrency)
        log.info(
            "worker_started",
            worker=info.id,
            outbox=outbox.location,
            destinations=list(info.destinations),
            concurrency=concurrency,
        )
        last_summary = started
        while not stop.wait(HEARTBEAT_S):
            info = _beat(outbox, info, queue, log)
            if time.monotonic() - last_summary >= SUMMARY_S:
                last_summary = time.monotonic()
                log.info("worker_summary", **_counts(info, started))
        log.info("worker_stopping", worker=info.id, grace_s=grace)
        queue.stop_delivery(grace)  # in-flight batches finish, or go back for another worker
        info = _beat(outbox, dataclasses.replace(info, stopped=True), queue, log)
    finally:
        router.close(timeout=0)
    summary = _counts(info, started)
    log.info("worker_stopped", **summary)
    return summary


def _beat(outbox: Outbox, info: WorkerInfo, queue: QueuedDelivery, log: Any) -> WorkerInfo:
    delivered, failed = queue.worker_counts()
    info = dataclasses.replace(info, delivered=delivered, failed=failed)
    try:
        outbox.heartbeat(info)
    except Exception as exc:  # the database is away for a moment: delivery reports it too
        log.warning("worker_heartbeat_failed", worker=info.id, error=f"{type(exc).__name__}: {exc}")
    return info


def _counts(info: WorkerInfo, started: float) -> dict[str, Any]:
    return {
        "worker": info.id,
        "delivered": info.delivered,
        "failed": info.failed,
        "uptime_s": round(time.monotonic() - started, 1),
    }


def _setter(stop: threading.Event) -> Any:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return handler


def _logging(config: RouterConfig, verbose: bool) -> None:
    """A worker is a service: its info lines (start, summaries, stop) show by default."""
    level = "debug" if verbose else None if os.environ.get(LOG_LEVEL_ENV_VAR) else "info"
    fmt = None
    if "format" in config.logging.model_fields_set and not os.environ.get(LOG_FORMAT_ENV_VAR):
        fmt = config.logging.format
    try:
        configure_logging(fmt, level)
    except ValueError as exc:
        raise BadInput(str(exc)) from None
