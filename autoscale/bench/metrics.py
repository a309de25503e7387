"""The metrics `autoscale bench` compares, with their direction and unit: one registry, read by the
runner (what to take from a trial), the statistics (which way is worse) and every output."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from autoscale.engine import TrialResult


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    higher_is_better: bool
    from_trial: Callable[[TrialResult], float | None] | None = None  # None: not a trial metric
    derived_from: str | None = None  # another metric's measurement restated: recorded and shown, never judged

    @property
    def judged(self) -> bool:
        """One verdict per measurement: tokens/s is tokens per step over the step time, so judging both
        would count one measurement twice (and one noisy round would page twice)."""
        return self.derived_from is None

    @property
    def load_sensitive(self) -> bool:
        """Times move with the host's load; memory does not."""
        return self.unit != "bytes"


TRIAL_METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("tokens_per_s", "throughput", "tokens/s", True, lambda r: r.tokens_per_s, derived_from="step_s"),
    Metric("step_s", "optimizer-step time (median of the timed steps)", "s", False, lambda r: r.step_s),
    Metric("step_cpu_s", "rank 0's CPU time per step (median; moves little with other jobs' load)", "s", False,
           lambda r: r.step_cpu_s),
    Metric("peak_bytes", "peak memory, largest rank", "bytes", False,
           lambda r: float(r.peak_bytes) if r.peak_bytes is not None else None),
)}
KERNEL_METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("time_s", "kernel time per round (pytest-benchmark)", "s", False),
)}
METRICS: dict[str, Metric] = TRIAL_METRICS | KERNEL_METRICS
