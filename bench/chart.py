"""The scaling figures as one PNG (matplotlib's object API: no display, no pyplot state).

.venv/bin/python -m bench.chart results.json docs/benchmarks.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

__all__ = ["draw"]

_THOUSANDS = FuncFormatter(lambda value, _pos: f"{value / 1000:,.1f}k".replace(".0k", "k"))


def _series(table: dict[Any, float]) -> tuple[list[int], list[float]]:
    # Keys are ints in memory and strings once the results went through JSON.
    points = sorted((int(k), float(v)) for k, v in table.items())
    return [k for k, _ in points], [v for _, v in points]


def _by_batch_size(ax: Axes, scaling: dict[str, Any], throughput: dict[str, Any] | None) -> None:
    sizes, rates = _series(scaling["by_batch_size"])
    ax.plot(sizes, rates, "o-", color="tab:blue", label="event-router (2 destinations)")
    if throughput is not None:
        ax.axhline(
            throughput["sdk_eps"],
            color="tab:red",
            linestyle="--",
            label="Segment + PostHog SDKs (their batches of 100)",
        )
        if "sdk_batch500_eps" in throughput:  # results from before it was measured lack it
            ax.axhline(
                throughput["sdk_batch500_eps"],
                color="tab:orange",
                linestyle=":",
                label="Segment + PostHog SDKs (batches of 500)",
            )
    ax.set_xscale("log")
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("batch_size (events per request)")
    ax.set_ylabel("events/s, each to both destinations")
    ax.set_title("Throughput by batch size")


def _by_destinations(ax: Axes, scaling: dict[str, Any]) -> None:
    counts, per_event = _series(scaling["by_destinations"])
    deliveries = [rate * n for rate, n in zip(per_event, counts, strict=True)]
    ax.plot(counts, per_event, "o-", color="tab:blue", label="events/s")
    ax.plot(
        counts, deliveries, "s--", color="tab:green", label="deliveries/s (events x destinations)"
    )
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel("destinations (default batch_size, 500)")
    ax.set_title("Throughput by number of destinations")


def _fanout(ax: Axes, fanout: dict[str, Any]) -> None:
    counts, latencies = _series(fanout["by_destinations"])
    one = float(fanout["latency_ms"])
    ax.plot(counts, latencies, "o-", color="tab:blue", label="event-router, direct mode")
    ax.plot(counts, [one * n for n in counts], ":", color="gray", label="one after the other")
    ax.axhline(150, color="tab:red", linestyle="--", label="target: 150 ms")
    ax.set_xticks(counts, [str(c) for c in counts])
    ax.set_xlabel(f"destinations, each answering in {one:g} ms")
    ax.set_ylabel("median ms per send()")
    ax.set_title("Direct-mode fan-out latency")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)


def draw(results: dict[str, Any], path: str | Path) -> None:
    """Write the chart of ``results`` (as ``python -m bench --json`` writes them) to ``path``."""
    scaling = results.get("scaling")
    fanout = results.get("fanout")
    if not scaling and not fanout:
        raise ValueError("the results hold no scaling or fan-out figures to draw")
    throughput = results.get("throughput")
    fig = Figure(figsize=(15, 4.6), layout="tight")
    batch_ax, dest_ax, fan_ax = fig.subplots(1, 3)
    if scaling:
        _by_batch_size(batch_ax, scaling, throughput or None)
        _by_destinations(dest_ax, scaling)
        for ax in (batch_ax, dest_ax):
            ax.yaxis.set_major_formatter(_THOUSANDS)
            ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right", fontsize=8)
    if fanout:
        _fanout(fan_ax, fanout)
    fig.suptitle("event-router scaling on local emulators (loopback)", fontsize=12)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.chart RESULTS.json OUTPUT.png")
    draw(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")), sys.argv[2])
