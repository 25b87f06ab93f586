"""Delivery from several processes on one machine, sharing one SQLite outbox.

An app process (``[queue] deliver = false``: it only enqueues) stores N events for both
emulators in a fresh outbox; then 1, 2 or 4 ``event-router worker -c CONFIG`` processes are
started on it, and the clock runs from their start until both emulators hold every event.
The rate includes the workers' own start-up (an interpreter and the plugins each), which an
operator pays too; the rate after the first delivery is reported beside it. The workers are
stopped with SIGTERM after each point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import workload
from bench.contenders import BenchError, RouterQueued
from bench.servers import EmulatorProcess
from bench.workload import destinations
from router_core import Router

__all__ = ["RouterWithWorkers", "run", "start_workers", "stop_workers"]

# The console script's entry point, run by this interpreter (the venv's, whatever PATH holds).
_WORKER = [sys.executable, "-c", "from router_core.cli import main; main()", "worker"]
_WAIT_S = 600.0
_POLL_S = 0.02
_STOP_S = 60.0


def _config(directory: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """The workers' config: the app's destinations and its outbox file."""
    lines = ["[queue]", f"path = {json.dumps(str(directory / 'outbox.db'))}"]
    for name, table in tables.items():
        lines.append(f"[destinations.{name}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    path = directory / "router.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def start_workers(config: Path, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    """``count`` ``event-router worker`` processes on ``config``, once each has started
    delivering (its ``worker_started`` line is in its log file under ``logs``)."""
    env = {**os.environ, "EVENT_ROUTER_LOG_LEVEL": "info"}
    files = [logs / f"worker-{n}.log" for n in range(count)]
    procs = []
    for file in files:
        with file.open("wb") as err:
            procs.append(subprocess.Popen([*_WORKER, "-c", str(config)], env=env, stderr=err))
    deadline = time.monotonic() + _WAIT_S
    while not all(b"worker_started" in f.read_bytes() for f in files):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            stop_workers(procs)
            raise BenchError(f"{count} worker(s) did not start: see {logs}")
        time.sleep(_POLL_S)
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each (they finish or hand back their batches), then wait for them."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(_STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RouterWithWorkers(RouterQueued):
    """event-router as an app runs it past one core: the app's process only enqueues
    (``[queue] deliver = false``) and ``event-router worker`` processes deliver from the
    same SQLite outbox. The workers are started, and ready, before the clock starts."""

    label = "event-router + worker process"

    def __init__(self, tables: dict[str, dict[str, Any]], workers: int = 1) -> None:
        super().__init__(tables, deliver=False)
        directory = Path(self._dir.name)
        self._names = list(tables)
        self._procs = start_workers(_config(directory, tables), workers, directory)

    def flush(self) -> None:
        outbox = self.router.outbox
        assert outbox is not None
        deadline = time.monotonic() + _WAIT_S
        while outbox.any_pending(self._names):
            if time.monotonic() > deadline:
                raise BenchError(f"the workers left events behind: {outbox.pending(self._names)}")
            time.sleep(_POLL_S)

    def helper_pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def close(self) -> None:
        stop_workers(self._procs)
        super().close()


def _enqueue(directory: Path, tables: dict[str, dict[str, Any]], events: int) -> None:
    """The app's part: store ``events`` events, deliver none of them."""
    queue = {"path": str(directory / "outbox.db"), "deliver": False}
    with Router(tables, queue=queue) as router:
        for i in range(events):
            router.send(workload.event(i))


def _held(emulators: tuple[EmulatorProcess, ...], events: int) -> bool:
    return all(emulator.count() >= events for emulator in emulators)


def _point(
    segment: EmulatorProcess, posthog: EmulatorProcess, workers: int, events: int
) -> dict[str, Any]:
    """One measurement: ``workers`` processes deliver a backlog of ``events`` to both."""
    segment.reset()
    posthog.reset()
    emulators = (segment, posthog)
    tables = destinations(2, segment.url, posthog.url)
    with tempfile.TemporaryDirectory(prefix="event-router-workers-") as tmp:
        directory = Path(tmp)
        config = _config(directory, tables)
        _enqueue(directory, tables, events)
        env = {**os.environ, "EVENT_ROUTER_LOG_LEVEL": "warning"}
        began = time.perf_counter()
        procs = [subprocess.Popen([*_WORKER, "-c", str(config)], env=env) for _ in range(workers)]
        first: float | None = None
        try:
            deadline = time.monotonic() + _WAIT_S
            while not _held(emulators, events):
                if first is None and any(e.count() for e in emulators):
                    first = time.perf_counter() - began
                if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                    raise BenchError(f"{workers} worker(s) did not deliver {events:,} events")
                time.sleep(_POLL_S)
            seconds = time.perf_counter() - began
        finally:
            stop_workers(procs)
    first = seconds if first is None else first
    unique = {e.vendor: e.unique() for e in emulators}
    if any(n != events for n in unique.values()):
        raise BenchError(f"the workers delivered {unique} distinct events, not {events:,} each")
    return {
        "seconds": seconds,
        "events_per_s": events / seconds,
        "first_delivery_s": first,
        "after_first_per_s": events / (seconds - first) if seconds > first else float("nan"),
        "received": unique,
    }


def run(events: int, counts: list[int]) -> dict[str, Any]:
    """Events/s (each to both destinations) with each number of worker processes in ``counts``."""
    points: dict[int, dict[str, Any]] = {}
    with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
        for n in counts:
            points[n] = got = _point(segment, posthog, n, events)
            print(
                f"  {n} worker(s): {got['events_per_s']:9,.0f} events/s from their start "
                f"({got['seconds']:.1f} s; first delivery after {got['first_delivery_s']:.1f} s, "
                f"{got['after_first_per_s']:,.0f} events/s from there)",
                flush=True,
            )
    one = points[counts[0]]["events_per_s"] if counts else float("nan")
    ratios = {n: p["events_per_s"] / one for n, p in points.items()}
    if counts:
        figures = "   ".join(f"{n}: {r:.2f}" for n, r in ratios.items())
        print(f"  ratio to {counts[0]} worker(s): {figures}", flush=True)
    return {
        "events": events,
        "events_per_s": {n: p["events_per_s"] for n, p in points.items()},
        "ratio": ratios,
        "points": points,
    }
