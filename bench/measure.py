"""Small measuring helpers: medians, timed send loops, peak memory, the machine."""

from __future__ import annotations

import os
import platform
import resource
import sqlite3
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the backlog children import this module, and no SDK
    from bench.contenders import Contender

__all__ = ["SendTimes", "machine", "median", "peak_rss_mb", "rss_mb", "time_sends"]


def median(values: Sequence[float]) -> float:
    """The median, or NaN for no values."""
    return statistics.median(values) if values else float("nan")


@dataclass(frozen=True, slots=True)
class SendTimes:
    """Per-call cost of ``send()`` over one run, in microseconds."""

    median_us: float
    mean_us: float
    p99_us: float
    sent: int
    dropped: int


def time_sends(contender: Contender, count: int, warmup: int, start: int = 0) -> SendTimes:
    """Time each of ``count`` sends on its own (after ``warmup`` untimed ones)."""
    for i in range(start, start + warmup):
        contender.send(contender.prepare(i))
    samples: list[int] = []
    dropped = 0
    clock = time.perf_counter_ns
    first = start + warmup
    for i in range(first, first + count):
        item = contender.prepare(i)
        began = clock()
        accepted = contender.send(item)
        samples.append(clock() - began)
        dropped += not accepted
    samples.sort()
    return SendTimes(
        median_us=samples[len(samples) // 2] / 1000,
        mean_us=sum(samples) / len(samples) / 1000,
        p99_us=samples[min(len(samples) - 1, len(samples) * 99 // 100)] / 1000,
        sent=count,
        dropped=dropped,
    )


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (VmHWM; ru_maxrss where there is no /proc)."""
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def rss_mb() -> float:
    """This process's resident memory now."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by process ``pid``, every thread of it; this
    process when ``pid`` is None."""
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        # The command name (field 2) may hold spaces: count fields after its closing ")".
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float:
    kb = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    kb = int(line.split()[1])
    except OSError:
        pass
    return kb / 1024 / 1024


def machine() -> dict[str, str | int | float]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count() or 0,
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
    }
