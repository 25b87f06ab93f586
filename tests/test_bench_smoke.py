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
BACKLOG = 500


def test_bench_quick_run_reports_every_figure_and_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--only",
            "caller,throughput,fanout,latency,backlog,workers",
            "--repeat",
            "1",
            "--caller-events",
            "100",
            "--events",
            str(EVENTS),
            "--fanout-sends",
            "1",
            "--latency-seconds",
            "1",
            "--backlog-events",
            str(BACKLOG),
            "--worker-events",
            str(EVENTS),
            "--worker-counts",
            "1,2",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=150,
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
    assert throughput["received"] == {
        "router": [every],
        "sdk": [every],
        "sdk_batch500": [every],
        "router_worker": [every],  # the app enqueues, an `event-router worker` delivers
    }
    assert throughput["ratio_batch500"] > 0
    assert throughput["ratio_worker"] > 0

    assert set(results["fanout"]["by_destinations"]) == {"1", "2", "4", "8"}

    latency = results["latency"]
    assert latency["events"] == 1000
    assert latency["missing"] == 0
    assert set(latency["by_destination"]) == {"segment", "posthog"}
    assert 0 < latency["p50_ms"] <= latency["p99_ms"] <= latency["max_ms"]
    assert latency["flush_interval_s"] > 0

    router = results["backlog"]["router"]
    assert router["dropped"] == 0
    assert router["complete"]
    assert router["delivered"] == {"segment": BACKLOG, "posthog": BACKLOG}
    assert router["drain_per_s"] > 0
    assert router["drain_peak_rss_mb"] >= router["peak_rss_mb"] > 0

    workers = results["workers"]
    assert set(workers["events_per_s"]) == {"1", "2"}
    for point in workers["points"].values():
        assert point["received"] == every
    assert "Summary" in done.stdout
