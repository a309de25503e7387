"""Where a study's time goes: its own phases by the tuner's clock, each trial's by its ranks' clock.

A study's cost per trial is more than its trials' wall times: the warm pool's start, the reference
run, the head-to-head confirmation, the files rewritten after every trial and the report all come
on top. `StudyClock` times the study's phases (one at a time, never nested; what falls between
them is `other`) and keeps every trial run in each (`TrialPhases`: start, build, gate, warm-up,
timed steps, and the finish the launcher adds). summary.json's `timing` holds both, so
`benchmarks/trial_overhead.py` reads the split from the product itself.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator

from autoscale.engine.request import TrialPhases, TrialRequest, TrialResult
from autoscale.results import atomic_write_text

STUDY_PHASES = ("setup", "pool_start", "reference", "trials", "confirmation", "summary", "report")
"""setup: the study opened and the cost model asked; pool_start: the warm ranks' imports (taken out
of the phase whose first trial paid it); summary: trials.csv and summary.json rewritten; report:
the HTML report, after summary.json is first written (the session adds it)."""

TRIAL_PARTS = ("start_s", "build_s", "gate_s", "warmup_s", "timed_s", "finish_s")


@dataclass(frozen=True)
class TrialTiming:
    phase: str  # the study phase that ran it: reference, trials or confirmation
    wall_s: float
    phases: TrialPhases | None  # None for a trial that failed before rank 0 reported

    def parts(self) -> dict[str, float]:
        """The trial's seconds by part; all of its wall time is `finish_s` when the ranks reported none."""
        if self.phases is None:
            return {**dict.fromkeys(TRIAL_PARTS, 0.0), "finish_s": self.wall_s}
        return {**asdict(self.phases), "finish_s": max(0.0, self.wall_s - self.phases.total_s())}


class StudyClock:
    """Seconds per study phase, and every trial run through `runner`."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.seconds = dict.fromkeys(STUDY_PHASES, 0.0)
        self.trials: list[TrialTiming] = []
        self.current: str | None = None

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if name not in self.seconds:
            raise ValueError(f"unknown study phase {name!r}; one of {', '.join(STUDY_PHASES)}")
        if self.current is not None:
            raise RuntimeError(f"study phase {name!r} inside {self.current!r}: phases do not nest")
        self.current, started = name, time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] += time.monotonic() - started
            self.current = None

    def runner(self, run: Callable[[TrialRequest], TrialResult]) -> Callable[[TrialRequest], TrialResult]:
        """`run`, keeping each result's timing under the phase that asked for it."""
        def timed(request: TrialRequest) -> TrialResult:
            result = run(request)
            self.trials.append(TrialTiming(self.current or "other", result.wall_s, result.phases))
            return result

        return timed

    def as_dict(self, *, pool_start_s: float = 0.0) -> dict:
        """summary.json's `timing`: the study's phases (the pool's start moved out of the phase that
        paid it), the rest as `other`, and per phase the trials' summed parts and their count."""
        seconds = dict(self.seconds)
        if pool_start_s:
            payer = next((t.phase for t in self.trials if t.phase in seconds), "trials")
            seconds[payer] = max(0.0, seconds[payer] - pool_start_s)
            seconds["pool_start"] += pool_start_s
        total_s = time.monotonic() - self.started
        seconds["other"] = max(0.0, total_s - sum(seconds.values()))
        by_phase: dict[str, dict] = {}
        for trial in self.trials:
            entry = by_phase.setdefault(trial.phase, {"count": 0, "wall_s": 0.0, **dict.fromkeys(TRIAL_PARTS, 0.0)})
            entry["count"] += 1
            entry["wall_s"] += trial.wall_s
            for part, value in trial.parts().items():
                entry[part] += value
        return {"total_s": total_s, "phases_s": seconds, "trials": by_phase,
                "per_trial": [{"phase": t.phase, "wall_s": t.wall_s, **t.parts()} for t in self.trials]}


def add_report_time(summary_path: Path, seconds: float) -> None:
    """The report is built from summary.json, so its seconds are added to the file afterwards."""
    summary = json.loads(summary_path.read_text())
    timing = summary.get("timing")
    if timing is None:
        return
    timing["phases_s"]["report"] = timing["phases_s"].get("report", 0.0) + seconds
    timing["total_s"] += seconds
    atomic_write_text(summary_path, json.dumps(summary, indent=2, default=str) + "\n")
