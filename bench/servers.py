"""Emulators in child processes, so that they never share the measured process's GIL.

A real vendor runs on another machine; running each emulator in a process of its own keeps the
client being measured (event-router or a vendor SDK) from paying for the server's Python work.

    with EmulatorProcess("segment") as segment:
        ...  # point a client at segment.url
        segment.wait_for(100_000)

The child (``python -m bench.servers segment [--port N]``) prints its URL, then answers one
command per line on stdin: ``count``, ``unique``, ``receipts PATH``, ``latency SECONDS``,
``reset``, ``quit``.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Literal

from bench.measure import cpu_seconds
from router_core.sandbox import Emulator, PostHogEmulator, SegmentEmulator
from router_core.sandbox.service import Service

__all__ = ["EmulatorProcess", "Vendor", "down_url", "free_port"]

Vendor = Literal["segment", "posthog"]

_START_TIMEOUT_S = 30.0
_POLL_S = 0.02


class EmulatorProcess(Service):
    """One vendor emulator serving on 127.0.0.1 in a child process."""

    def __init__(self, vendor: Vendor, port: int = 0) -> None:
        self.vendor: Vendor = vendor
        self.port = port
        """The port to listen on (0: any free one)."""
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> None:
        """Start the child and wait until it listens."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "bench.servers", self.vendor, "--port", str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.url = str(self._reply()["url"])

    def _reply(self) -> dict[str, str | int]:
        assert self._proc is not None
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.vendor} emulator process exited")
        reply: dict[str, str | int] = json.loads(line)
        return reply

    def _ask(self, command: str) -> dict[str, str | int]:
        assert self._proc is not None
        assert self._proc.stdin is not None
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        return self._reply()

    def count(self) -> int:
        """Events accepted so far (duplicates included)."""
        return int(self._ask("count")["events"])

    def unique(self) -> int:
        """Distinct message ids among the events accepted."""
        return int(self._ask("unique")["unique"])

    def receipts(self) -> dict[str, float]:
        """When each distinct message id first arrived: Unix seconds (``time.time()``'s clock).

        The child writes them to a file, so that a run's worth never travels as one line."""
        with tempfile.TemporaryDirectory(prefix="event-router-bench-") as tmp:
            path = Path(tmp) / "receipts.json"
            self._ask(f"receipts {path}")
            receipts: dict[str, float] = json.loads(path.read_text(encoding="utf-8"))
        return receipts

    def set_latency(self, seconds: float) -> None:
        """Every ingestion request waits ``seconds`` before it is answered."""
        self._ask(f"latency {seconds!r}")

    def cpu_seconds(self) -> float:
        """CPU time the emulator's process has used so far."""
        assert self._proc is not None
        return cpu_seconds(self._proc.pid)

    def reset(self) -> None:
        """Forget the events received and clear the faults."""
        self._ask("reset")

    def wait_for(self, count: int, timeout: float) -> bool:
        """Poll until ``count`` events were accepted; False when ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            if self.count() >= count:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Stop the child (it stops its emulator first)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.close()
            proc.wait(10)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


def free_port() -> int:
    """A loopback port nothing listens on now (the OS picked it; it may be bound later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def down_url() -> str:
    """A loopback URL where nothing listens (connections are refused): a destination down."""
    return f"http://127.0.0.1:{free_port()}"


def _write_receipts(emulator: Emulator, path: str) -> int:
    # ``received_at`` is the emulator's wall clock as the request carrying the event arrived
    # (datetime.now(UTC), the clock of time.time()): the receipt time, with no hook needed.
    first: dict[str, float] = {}
    for event in emulator.events:
        at = event.received_at.timestamp()
        if at < first.get(event.message_id, float("inf")):
            first[event.message_id] = at
    Path(path).write_text(json.dumps(first), encoding="utf-8")
    return len(first)


def _serve(vendor: Vendor, port: int) -> None:
    emulator: Emulator = (
        SegmentEmulator(port=port) if vendor == "segment" else PostHogEmulator(port=port)
    )
    with emulator:
        print(json.dumps({"url": emulator.url}), flush=True)
        for line in sys.stdin:
            command, _, arg = line.strip().partition(" ")
            if command == "count":
                # The activity mark counts the events without copying them (the count is
                # polled while a run is under way: copying a long list would slow ingestion).
                reply: dict[str, object] = {"events": emulator.activity(None, 0).mark.events}
            elif command == "receipts":
                reply = {"unique": _write_receipts(emulator, arg)}
            elif command == "unique":
                reply = {"unique": len(set(emulator.message_ids()))}
            elif command == "latency":
                emulator.faults.set(latency=float(arg))
                reply = {"ok": True}
            elif command == "reset":
                emulator.reset()
                reply = {"ok": True}
            elif command == "quit":
                break
            else:
                reply = {"error": f"unknown command {command!r}"}
            print(json.dumps(reply), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="one emulator child (used by EmulatorProcess)")
    parser.add_argument("vendor", choices=["segment", "posthog"])
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    args = parser.parse_args(argv)
    _serve(args.vendor, args.port)


if __name__ == "__main__":
    main()
