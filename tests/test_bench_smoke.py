"""The benchmark suite runs end to end with tiny counts (figures are printed, never asserted).

It runs as ``python -m bench`` from the repository root, as ``make bench`` does, and checks
the shape of the results and that every event reached both emulators.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVENTS = 300


def test_bench_quick_run_reports_every_figure_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "caller,throughput,fanout",
            "--repeat",
            "1",
            "--caller-events",
            "100",
            "--events",
            str(EVENTS),
            "--fanout-sends",
            "1",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text(encoding="utf-8"))

    caller = results["caller"]
    assert len(caller["runs"]["router"]) == len(caller["runs"]["sdk"]) == 1
    assert caller["router_us"] > 0
    assert caller["sdk_us"] > 0

    throughput = results["throughput"]
    assert throughput["events"] == EVENTS
    every = {"segment": EVENTS, "posthog": EVENTS}
    assert throughput["received"] == {"router": [every], "sdk": [every]}

    assert set(results["fanout"]["by_destinations"]) == {"1", "2", "4", "8"}
    assert "Summary" in done.stdout
