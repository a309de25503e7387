"""How busy the host is while a study measures: load average, steal time, and the CPU others use.

Throughput measured on a shared machine moves with what else runs there (the same baseline has
measured 11,488 and 5,819 tokens/s in two studies on this kind of 2-core machine). This cannot be
removed, but it can be seen: the study samples the host before its first trial (when nothing of its
own runs, so every busy CPU is someone else's) and after each trial, warns in one line when the
host is busy, and records what it saw in summary.json, where reports and `compare` read it.
Linux only (`/proc`); elsewhere the samples are empty and nothing is claimed.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median

from autoscale.provenance import utc_now

BUSY_CPU_FRACTION = 0.25
"""Other processes using more than this share of all cores before the study: a busy host. A quarter
of two cores is one process spinning half the time, enough to move a 2-rank trial's step time by
tens of percent."""

BUSY_STEAL_FRACTION = 0.05
"""A hypervisor taking more than this share of the CPU time: a busy host, whatever runs inside."""


@dataclass(frozen=True)
class LoadSample:
    at: str
    load1: float | None  # runnable processes, 1-minute average (/proc/loadavg)
    busy_fraction: float | None  # share of all cores busy over the sampling interval (/proc/stat)
    steal_fraction: float | None  # share of CPU time the hypervisor took


def sample(interval_s: float = 0.5, proc: Path = Path("/proc")) -> LoadSample:
    """One sample: the load average now, and CPU shares over `interval_s` seconds."""
    first = _cpu_times(proc)
    if first:
        time.sleep(interval_s)
    return _sample_between(first, _cpu_times(proc), proc)


def _sample_between(first: list[int] | None, second: list[int] | None, proc: Path) -> LoadSample:
    busy = steal = None
    if first and second:
        total = sum(second) - sum(first)
        idle = (second[3] + second[4]) - (first[3] + first[4])  # idle, iowait
        if total > 0:
            busy = 1 - idle / total
            steal = (second[7] - first[7]) / total if len(second) > 7 else None
    return LoadSample(at=utc_now(), load1=_load1(proc), busy_fraction=busy, steal_fraction=steal)


def _cpu_times(proc: Path) -> list[int] | None:
    try:
        fields = (proc / "stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    return [int(value) for value in fields[1:]] if fields and fields[0] == "cpu" else None


def _load1(proc: Path) -> float | None:
    try:
        return float((proc / "loadavg").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def busy_reason(before: LoadSample) -> str | None:
    """Why the host counts as busy before the study (every busy CPU then is another process's), or None."""
    if before.busy_fraction is not None and before.busy_fraction > BUSY_CPU_FRACTION:
        return f"other processes use {before.busy_fraction:.0%} of the {os.cpu_count()} cores"
    if before.steal_fraction is not None and before.steal_fraction > BUSY_STEAL_FRACTION:
        return f"the hypervisor steals {before.steal_fraction:.0%} of the CPU time"
    return None


class LoadLog:
    """The samples of one study: one before it, one after each trial."""

    def __init__(self, before: LoadSample, proc: Path = Path("/proc")):
        self.before = before
        self.during: list[LoadSample] = []
        self.proc = proc
        self._cpu_times = _cpu_times(proc)

    def add(self, load: LoadSample) -> None:
        self.during.append(load)

    def add_now(self) -> None:
        """A sample after a trial, taken without waiting: its CPU shares span the time since the
        previous one (the trial's, its own ranks included; `as_dict` reads only load and steal from it)."""
        now = _cpu_times(self.proc)
        self.during.append(_sample_between(self._cpu_times, now, self.proc))
        self._cpu_times = now

    def as_dict(self) -> dict:
        loads = [s.load1 for s in self.during if s.load1 is not None]
        steals = [s.steal_fraction for s in self.during if s.steal_fraction is not None]
        return {"cores": os.cpu_count(), "before": asdict(self.before), "busy_before": busy_reason(self.before),
                "during": {"samples": len(self.during),
                           "load1": [min(loads), median(loads), max(loads)] if loads else None,
                           "steal_fraction_max": max(steals) if steals else None}}
