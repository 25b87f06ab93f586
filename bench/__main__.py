"""event-router against the vendors' own SDKs, side by side, on local emulators.

    .venv/bin/python -m bench                 # the whole suite (a few minutes)
    .venv/bin/python -m bench --quick         # a smoke run with small counts (seconds)
    .venv/bin/python -m bench --repeat 5 --json results.json --chart docs/benchmarks.png

Every figure comes from real HTTP on 127.0.0.1: each emulator runs in a process of its own,
as a vendor runs on a machine of its own. Nothing here is a pass/fail test; the suite prints
figures, the ratios between them, and how they compare with the targets.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import backlog, caller, fanout, latency, throughput, workers
from bench.measure import machine
from bench.workload import quiet_logs

SECTIONS = (
    "caller",
    "throughput",
    "fanout",
    "latency",
    "backlog",
    "scaling",
    "workers",
    "postgres",
)

# Targets the figures are compared with (printed, never asserted).
CALLER_RATIO_MAX = 1 / 6
THROUGHPUT_RATIO_MIN = 5.0
FANOUT_8_MAX_MS = 150.0
BACKLOG_PEAK_MAX_MB = 100.0
DELIVERIES_8_TO_2_MIN = 1.0  # eight destinations deliver at least as much as two


@dataclass(frozen=True, slots=True)
class Plan:
    """How much work each section does."""

    repeat: int
    caller_events: int
    throughput_events: int
    fanout_sends: int
    backlog_events: int
    scaling_events: int
    latency_seconds: float
    worker_events: int
    worker_counts: tuple[int, ...] = (1, 2, 4)
    batch_sizes: tuple[int, ...] = (10, 25, 50, 100, 250, 500, 1000)
    destination_counts: tuple[int, ...] = (1, 2, 4, 8)


def _plan(args: argparse.Namespace) -> Plan:
    quick = args.quick
    return Plan(
        repeat=args.repeat or (1 if quick else 5),
        caller_events=args.caller_events or (2_000 if quick else 20_000),
        throughput_events=args.events or (5_000 if quick else 100_000),
        fanout_sends=args.fanout_sends or (3 if quick else 20),
        backlog_events=args.backlog_events or (20_000 if quick else 1_000_000),
        scaling_events=args.scaling_events or (2_000 if quick else 20_000),
        latency_seconds=args.latency_seconds or (3.0 if quick else 20.0),
        worker_events=args.worker_events or (3_000 if quick else 50_000),
        worker_counts=_counts(args.worker_counts) if args.worker_counts else (1, 2, 4),
    )


def _counts(text: str) -> tuple[int, ...]:
    return tuple(int(n) for n in text.split(","))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="small counts, one run each")
    parser.add_argument("--repeat", type=int, help="runs per headline figure (default 5)")
    parser.add_argument(
        "--only", help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})"
    )
    parser.add_argument("--events", type=int, help="events per throughput run (100,000)")
    parser.add_argument("--caller-events", type=int, help="timed sends per caller run (20,000)")
    parser.add_argument("--fanout-sends", type=int, help="sends per fan-out figure (20)")
    parser.add_argument("--backlog-events", type=int, help="backlog size (1,000,000)")
    parser.add_argument("--scaling-events", type=int, help="events per scaling point (20,000)")
    parser.add_argument(
        "--latency-seconds", type=float, help="seconds of sending at 1,000 events/s (20)"
    )
    parser.add_argument("--worker-events", type=int, help="backlog per workers point (50,000)")
    parser.add_argument(
        "--worker-counts", help="comma-separated numbers of worker processes (1,2,4)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--chart", type=Path, help="also draw the scaling chart to this PNG")
    return parser


def run(plan: Plan, sections: tuple[str, ...]) -> dict[str, Any]:
    """Run ``sections`` of the suite; return every figure."""
    quiet_logs()
    results: dict[str, Any] = {"machine": machine(), "plan": asdict(plan)}
    if "caller" in sections:
        print(f"\nCaller cost: one event to Segment and PostHog ({plan.caller_events:,} timed)")
        results["caller"] = caller.run(plan.caller_events, plan.repeat)
    if "throughput" in sections:
        print(f"\nThroughput: {plan.throughput_events:,} events to both, until acknowledged")
        results["throughput"] = throughput.run(plan.throughput_events, plan.repeat)
    if "fanout" in sections:
        print("\nDirect-mode fan-out: destinations answering in 100 ms each")
        results["fanout"] = fanout.run(list(plan.destination_counts), plan.fanout_sends)
    if "latency" in sections:
        print(
            f"\nLatency: send() to the vendor's receipt, {latency.RATE:,.0f} events/s "
            f"for {plan.latency_seconds:g} s"
        )
        results["latency"] = latency.run(plan.latency_seconds)
    if "backlog" in sections:
        print(
            f"\nBacklog: {plan.backlog_events:,} events while both destinations are down, "
            "then delivered once they are back"
        )
        results["backlog"] = backlog.run(plan.backlog_events)
    if "scaling" in sections:
        print(f"\nScaling: event-router throughput, {plan.scaling_events:,} events per point")
        results["scaling"] = throughput.run_scaling(
            plan.scaling_events,
            list(plan.batch_sizes),
            list(plan.destination_counts),
            1 if plan.repeat == 1 else 3,
        )
    if "workers" in sections:
        print(
            f"\nWorkers: event-router worker processes draining {plan.worker_events:,} events "
            "from one SQLite outbox"
        )
        results["workers"] = workers.run(plan.worker_events, list(plan.worker_counts))
    if "postgres" in sections:
        from bench import postgres  # noqa: PLC0415  (psycopg and a server: only when asked)

        print(f"\nPostgreSQL outbox and workers ({postgres.URL.rsplit('@', 1)[-1]})")
        results["postgres"] = postgres.run(plan.repeat == 1 and plan.caller_events < 20_000,
                                           plan.repeat)  # fmt: skip
    return results


def _verdict(met: bool) -> str:
    return "target met" if met else "TARGET MISSED"


def summary(results: dict[str, Any]) -> list[str]:
    """The headline figures, their ratios and the targets, as printable lines."""
    lines = [f"\nSummary (medians of {results['plan']['repeat']} run(s))"]
    if "caller" in results:
        c = results["caller"]
        lines.append(
            f"  caller cost      event-router {c['router_us']:8.1f} µs    SDKs "
            f"{c['sdk_us']:8.1f} µs    ratio {c['ratio']:.2f} "
            f"(target ≤ {CALLER_RATIO_MAX:.2f}: {_verdict(c['ratio'] <= CALLER_RATIO_MAX)})"
        )
    if "throughput" in results:
        t = results["throughput"]
        for label, ours, eps, ratio in (
            ("throughput", t["router_eps"], t["sdk_eps"], t["ratio"]),
            ("  SDKs batch 500", t["router_eps"], t["sdk_batch500_eps"], t["ratio_batch500"]),
        ):
            lines.append(
                f"  {label:<16} event-router {ours:8,.0f} /s    SDKs "
                f"{eps:8,.0f} /s    ratio {ratio:.1f}x "
                f"(target ≥ {THROUGHPUT_RATIO_MIN:g}x: {_verdict(ratio >= THROUGHPUT_RATIO_MIN)})"
            )
        cpu = t.get("cpu_us_per_event")
        if cpu:  # why the ratio stops where it does: CPU per event, router and emulators
            cores = os.cpu_count() or 1
            needed = THROUGHPUT_RATIO_MIN * t["sdk_eps"]
            ours = cpu["router"]["client_us"] + cpu["router"]["emulators_us"]
            lines.append(
                f"  CPU per event    event-router {cpu['router']['client_us']:.1f} µs + "
                f"emulators {cpu['router']['emulators_us']:.1f} µs; "
                f"{THROUGHPUT_RATIO_MIN:g}x the SDKs ({needed:,.0f} /s) would need "
                f"{needed * ours / 1e6:.1f} of the machine's {cores} CPUs"
            )
        if "router_worker_eps" in t:  # the deployment shape past one core, for comparison
            lines.append(
                f"  + 1 worker proc. event-router {t['router_worker_eps']:8,.0f} /s    "
                f"ratio {t['ratio_worker']:.1f}x the SDKs' defaults, "
                f"{t['ratio_worker_batch500']:.1f}x batches of 500 (deliver = false + "
                "`event-router worker`)"
            )
    if "fanout" in results:
        f = results["fanout"]["by_destinations"]
        figures = "   ".join(f"{n}: {ms:.0f} ms" for n, ms in f.items())
        eight = f.get(8)
        verdict = (
            f" (8 within {FANOUT_8_MAX_MS:g} ms: {_verdict(eight <= FANOUT_8_MAX_MS)})"
            if eight is not None
            else ""
        )
        lines.append(f"  fan-out          {figures}{verdict}")
    if "latency" in results:
        lat = results["latency"]
        lines.append(
            f"  latency          p50 {lat['p50_ms']:.0f} ms   p99 {lat['p99_ms']:.0f} ms   "
            f"max {lat['max_ms']:.0f} ms at {lat['rate']:,.0f} events/s, "
            f"flush_interval {lat['flush_interval_s']:g} s, missing {lat['missing']:,} "
            f"(target p99 ≤ {lat['target_p99_ms']:.0f} ms: "
            f"{_verdict(lat['p99_ms'] <= lat['target_p99_ms'] and lat['missing'] == 0)})"
        )
    if "backlog" in results:
        b = results["backlog"]
        r = b["router"]
        peak = max(r["peak_rss_mb"], r["drain_peak_rss_mb"])
        all_back = r["complete"] and all(n == b["events"] for n in r["delivered"].values())
        met = peak <= BACKLOG_PEAK_MAX_MB and r["dropped"] == 0 and all_back
        lines.append(
            f"  backlog {b['events']:,}   event-router peak {r['peak_rss_mb']:.0f} MB accepting, "
            f"{r['drain_peak_rss_mb']:.0f} MB through the drain, dropped {r['dropped']:,}, "
            f"delivered {'all' if all_back else 'NOT all'} in {r['drain_seconds']:.1f} s "
            f"({r['drain_per_s']:,.0f} events/s each to both) "
            f"(target ≤ {BACKLOG_PEAK_MAX_MB:g} MB, 0 dropped, all delivered: {_verdict(met)});"
            f"  Segment SDK dropped {b['segment']['dropped']:,}, "
            f"PostHog SDK dropped {b['posthog']['dropped']:,}"
        )
    if "scaling" in results:
        by = results["scaling"]["by_destinations"]
        if 8 in by and 2 in by:
            eight, two = by[8] * 8, by[2] * 2
            ratio = eight / two
            lines.append(
                f"  deliveries/s     8 destinations {eight:,.0f} vs 2 destinations {two:,.0f}, "
                f"ratio {ratio:.2f} (target ≥ {DELIVERIES_8_TO_2_MIN:g}: "
                f"{_verdict(ratio >= DELIVERIES_8_TO_2_MIN)})"
            )
    if "workers" in results:
        w = results["workers"]
        figures = "   ".join(
            f"{n}: {eps:,.0f} /s ({w['ratio'][n]:.2f})" for n, eps in w["events_per_s"].items()
        )
        lines.append(f"  workers          {figures} (ratio to 1 process; scaling measured)")
    if "postgres" in results:
        p = results["postgres"]
        ratios = "  ".join(f"{n}: {r:.2f}" for n, r in p["scaling"]["ratio"].items())
        lines.append(
            f"  postgres         send {p['caller']['send_us']:.0f} µs, in a transaction "
            f"+{p['caller']['in_transaction_added_us']:.0f} µs; one worker "
            f"{p['one_worker_deliveries_per_s']:,.0f} deliveries/s; scaling ratios {ratios}"
        )
    return lines


def main(argv: list[str] | None = None) -> None:
    """Run the suite and print the figures (optionally also as JSON and a chart)."""
    args = _parser().parse_args(argv)
    sections = SECTIONS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; pick from {SECTIONS}")
    plan = _plan(args)
    info = machine()
    print(
        f"event-router benchmarks on {info['cpus']} CPU(s) ({info['cpu']}), "
        f"{info['memory_gib']} GiB, Python {info['python']}, SQLite {info['sqlite']}"
    )
    began = time.perf_counter()
    results = run(plan, sections)
    results["seconds"] = time.perf_counter() - began
    for line in summary(results):
        print(line)
    print(f"\n(suite took {results['seconds']:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        print(f"results written to {args.json}")
    if args.chart:
        from bench.chart import draw  # noqa: PLC0415  (matplotlib: only when a chart is asked for)

        draw(results, args.chart)
        print(f"chart written to {args.chart}")


if __name__ == "__main__":
    main()
