"""Profile a hot path with py-spy (every thread, only while it holds the GIL) and summarise.

    .venv/bin/python -m bench.profile caller       # send() in queued mode, destinations down
    .venv/bin/python -m bench.profile throughput   # send + deliver, emulators up
    .venv/bin/python -m bench.profile fanout       # direct mode, 8 destinations
    .venv/bin/python -m bench.profile throughput --events 50000 --top 40 --raw stacks.txt

py-spy samples from outside the process, so the router's own thread (where the outbox
workers and the HTTP client run) is seen too. For ``throughput`` and ``fanout`` only the
thread holding the GIL is sampled (``--gil``): that is what limits a Python process. For
``caller`` every busy moment of every thread is, since the SQLite commit that send() waits for
runs without the GIL. py-spy needs to be allowed to trace the process (root, or
``CAP_SYS_PTRACE`` in a container).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import workload
from bench.servers import EmulatorProcess, down_url
from bench.workload import destinations, quiet_logs
from router_core import Router
from router_core.logs import configure_logging

__all__ = ["main", "summarise"]

SCENARIOS = ("caller", "throughput", "fanout")


def _scenario(name: str, events: int) -> None:
    """The workload itself (run under py-spy, in a child process)."""
    quiet_logs()
    if name == "fanout":
        with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
            segment.set_latency(0.1)
            posthog.set_latency(0.1)
            with Router(destinations(8, segment.url, posthog.url)) as router:
                for i in range(events):
                    router.send(workload.event(i))
        return
    with tempfile.TemporaryDirectory(prefix="event-router-profile-") as tmp:
        queue = {"path": str(Path(tmp) / "outbox.db")}
        if name == "caller":
            configure_logging(level="error")  # one warning per refused attempt says nothing
            with Router(destinations(2, down_url(), down_url()), queue=queue) as router:
                for i in range(events):
                    router.send(workload.event(i))
                router.close(timeout=0)
            return
        configure_logging(level="warning")
        with EmulatorProcess("segment") as segment, EmulatorProcess("posthog") as posthog:
            router = Router(destinations(2, segment.url, posthog.url), queue=queue)
            began = time.perf_counter()
            for i in range(events):
                router.send(workload.event(i))
            router.flush(600)
            print(f"{events / (time.perf_counter() - began):,.0f} events/s", file=sys.stderr)
            router.close()


def _frame(frame: str) -> str:
    """``function (file.py:line)`` with the directories left out."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def summarise(raw: str, top: int) -> list[str]:
    """Per-thread shares, then the ``top`` functions by inclusive and by own time."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        threads[frames[0]] += n  # "thread (TID): NAME"
        for frame in {_frame(f) for f in frames[1:]}:
            inclusive[frame] += n
        own[_frame(frames[-1])] += n
    if not total:
        return ["no samples"]
    lines = [f"{total} samples"]
    lines += [f"{n / total:6.1%}  {thread}" for thread, n in threads.most_common()]
    lines.append("-- inclusive")
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    lines.append("-- own time")
    lines += [f"{n / total:6.1%}  {frame}" for frame, n in own.most_common(top)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--events", type=int, help="events to send (default per scenario)")
    parser.add_argument("--top", type=int, default=30, help="functions listed per table")
    parser.add_argument("--rate", type=int, default=500, help="samples per second")
    parser.add_argument("--raw", type=Path, help="keep py-spy's collapsed stacks here")
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    events = args.events or {"caller": 100_000, "throughput": 50_000, "fanout": 50}[args.scenario]
    if args.run:
        _scenario(args.scenario, events)
        return
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed: pip install -e '.[bench]'")
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw or Path(tmp) / "stacks.txt"
        record = [spy, "record", "--format", "raw", "--threads"]
        if args.scenario != "caller":
            record.append("--gil")
        options = ["--rate", str(args.rate), "--output", str(raw)]
        command = [sys.executable, "-m", "bench.profile", args.scenario, "--run"]
        subprocess.run([*record, *options, "--", *command, "--events", str(events)], check=True)
        print("\n".join(summarise(raw.read_text(encoding="utf-8"), args.top)))


if __name__ == "__main__":
    main()
