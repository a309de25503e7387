"""The host's load while a bench run measures: the 1-minute load average (/proc/loadavg) and the share
of CPU time stolen by the hypervisor, sampled (`autoscale.hostload`) before the run and every few seconds during it.

Why: a stored baseline and tonight's run are measured at different times. If other jobs kept more
processes runnable during one of them, step time moves with that load, not with the code, and no
statistic over one side's repeats can tell the two apart. Recording the load on both sides lets the
comparison say "inconclusive" instead of guessing (`material_load_ratio`, used by compare.py).

"Materially" follows a processor-sharing model of a CPU-bound job on C cores: with L runnable tasks
(our ranks included) each gets about min(1, C / L) of a core, so step time scales with max(C, L) / C,
and stolen time removes its share of the CPU outright. Two loads differ materially when the step-time
ratio they alone predict, max(C, L_now) / max(C, L_then) times (1 - steal_then) / (1 - steal_now), is
past the comparison's threshold either way: the load alone could then make or hide the change the
threshold is there to catch. A verdict then stands only if the comparison gives the same one with the
candidate's samples divided by that predicted ratio (as if measured under the baseline's load): the
change is then larger than the load could explain, or no change hides behind it. Otherwise it is
inconclusive. Off Linux (no /proc) nothing is recorded and nothing is judged.
"""

from __future__ import annotations

import os
import statistics
import threading
from dataclasses import asdict, dataclass

from autoscale.hostload import LoadSample, sample

SAMPLE_EVERY_S = 2.0


@dataclass(frozen=True, kw_only=True)
class HostLoad:
    """Load of one run: before it started and the median over its duration (`autoscale.hostload` samples)."""

    cpus: int
    loadavg_1m_before: float | None
    loadavg_1m_during: float | None  # median of the samples taken while it ran
    steal_fraction_during: float | None  # median share of CPU time stolen; None without /proc/stat
    samples: int

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> "HostLoad | None":
        return cls(**data) if data else None


def _median(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


class LoadMonitor:
    """Context manager sampling the host in a daemon thread; `result` once it has exited."""

    def __init__(self, every_s: float = SAMPLE_EVERY_S, interval_s: float = 0.5):
        self.every_s, self.interval_s = every_s, interval_s
        self.result: HostLoad | None = None
        self._during: list[LoadSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            self._during.append(sample(self.interval_s))

    def __enter__(self) -> "LoadMonitor":
        self._before = sample(self.interval_s)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        during = self._during + [sample(self.interval_s)]
        self.result = HostLoad(cpus=len(os.sched_getaffinity(0)), loadavg_1m_before=self._before.load1,
                               loadavg_1m_during=_median([s.load1 for s in during]),
                               steal_fraction_during=_median([s.steal_fraction for s in during]),
                               samples=len(during))


def load_step_ratio(then: HostLoad, now: HostLoad) -> float | None:
    """Step-time ratio (now / then) that the load difference alone predicts; None if either is unknown."""
    if then.loadavg_1m_during is None or now.loadavg_1m_during is None:
        return None
    ratio = max(now.cpus, now.loadavg_1m_during) / now.cpus / (max(then.cpus, then.loadavg_1m_during) / then.cpus)
    if then.steal_fraction_during is not None and now.steal_fraction_during is not None:
        ratio *= (1 - then.steal_fraction_during) / max(1e-9, 1 - now.steal_fraction_during)
    return ratio


def material_load_ratio(then: HostLoad | None, now: HostLoad | None, threshold: float) -> float | None:
    """The step-time ratio the load difference alone predicts, when it is past `threshold` either way;
    None when the loads do not differ materially or either is unknown (an old baseline: judged as before)."""
    if then is None or now is None:
        return None
    ratio = load_step_ratio(then, now)
    if ratio is None or 1 / (1 + threshold) <= ratio <= 1 + threshold:
        return None
    return ratio


def describe_load_difference(then: HostLoad, now: HostLoad, ratio: float) -> str:
    return (f"host load differs: load average {then.loadavg_1m_during:.2f} then, {now.loadavg_1m_during:.2f} now "
            f"on {now.cpus} CPUs predicts a step-time ratio of {ratio:.2f} by itself")
