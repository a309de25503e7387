"""`autoscale bench` as one library call: load, check, run, compare, write every output.

Bad input (a suite or baseline that cannot be read, a baseline from other hardware) is refused with a
UserError before any trial runs. The outcome says whether something regressed; the caller decides
the exit code, after every output has been written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autoscale.bench.ab import Slowdown, check_kernels_for_ab, probe_interpreter, run_ab
from autoscale.bench.compare import AB, BenchComparison, compare_records
from autoscale.bench.defaults import DEFAULT_HISTORY, DEFAULT_THRESHOLD
from autoscale.bench.history import load_history, write_history
from autoscale.bench.junit import write_junit
from autoscale.bench.priority import DEFAULT_NICE, raised_priority
from autoscale.bench.record import BenchRecord, check_hardware, environment, load_record
from autoscale.bench.runner import Observer, resolve_backend_and_nproc, run_suite
from autoscale.bench.suite import Suite, load_suite
from autoscale.bench.trend import write_trend
from autoscale.errors import UserError


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    suite: Path
    baseline: Path | None = None
    save_baseline: Path | None = None
    threshold: float = DEFAULT_THRESHOLD  # for metrics whose threshold the suite does not set
    history: Path = DEFAULT_HISTORY
    junit: Path | None = None
    html: Path | None = None
    allow_hardware_mismatch: bool = False
    workdir: Path | None = None  # trial folders; default a temporary folder
    command: list[str] = field(default_factory=list)
    fault: str | None = None  # test-only, passed to every trial (see TrialRequest)
    slow_step_s: float = 0.0  # with --against: the candidate side only
    against: Path | None = None  # A/B mode: the baseline side's Python interpreter
    nice: int = DEFAULT_NICE  # niceness adjustment for the trials (bench.priority); 0 leaves it


@dataclass(frozen=True, kw_only=True)
class BenchOutcome:
    suite: Suite
    record: BenchRecord
    comparison: BenchComparison | None
    written: dict[str, Path]
    baseline_refused: str | None = None  # why --save-baseline did not write
    other: dict | None = None  # A/B: the baseline side's environment (ab.probe_interpreter)
    baseline_record: BenchRecord | None = None
    priority_refused: str | None = None  # why the trials ran without the asked-for priority

    @property
    def regressed(self) -> bool:
        baseline_failed = bool(self.comparison and self.comparison.mode == AB and self.baseline_failures)
        return (bool(self.record.failed_cases) or baseline_failed
                or bool(self.comparison and self.comparison.regressed))

    @property
    def baseline_failures(self) -> dict[str, list[str]]:
        """A/B: the baseline side's repeats that failed every attempt (their rounds were dropped)."""
        return self.baseline_record.failed_cases if self.baseline_record is not None else {}


def prepare(options: BenchOptions) -> tuple[Suite, BenchRecord | None, dict | None]:
    """Everything that can be refused without running a trial; the third item is the --against probe."""
    if not 0 < options.threshold < 10:
        raise UserError(f"--threshold must be a fraction such as 0.05, got {options.threshold}")
    if options.against is not None and options.baseline is not None:
        raise UserError("--against and --baseline are two ways to compare: give one")
    suite = load_suite(options.suite)
    if options.against is not None:
        if suite.kernels is not None:
            check_kernels_for_ab(suite.kernels)
        return suite, None, probe_interpreter(options.against)
    baseline = load_record(options.baseline) if options.baseline is not None else None
    if baseline is not None:
        if baseline.suite != suite.name:
            raise UserError(f"baseline {str(options.baseline)!r} is of suite {baseline.suite!r}, not {suite.name!r}")
        backend, _ = resolve_backend_and_nproc(suite)
        hardware, _ = environment(backend)
        check_hardware(baseline, hardware, allow_mismatch=options.allow_hardware_mismatch)
    return suite, baseline, None


def run_bench(options: BenchOptions, observer: Observer | None = None) -> BenchOutcome:
    """`observer` gets `repeat_finished` calls, and `side_finished` ones in A/B mode."""
    suite, baseline, other = prepare(options)
    with tempfile.TemporaryDirectory(prefix="autoscale-bench-") as scratch, \
            raised_priority(options.nice) as priority:
        workdir = options.workdir or Path(scratch)
        if other is not None:
            baseline, record = run_ab(suite, against=options.against, other=other, workdir=workdir,
                                      command=options.command, observer=observer,
                                      slowdown=Slowdown(options.slow_step_s), default_threshold=options.threshold)
        else:
            record = run_suite(suite, workdir=workdir, command=options.command, observer=observer,
                               fault=options.fault, slow_step_s=options.slow_step_s)
    comparison = None
    if baseline is not None:
        comparison = compare_records(baseline, record, suite, default_threshold=options.threshold,
                                     paired=other is not None,
                                     against=str(options.against) if other is not None else None)
    written: dict[str, Path] = {}
    refused = None
    if options.save_baseline is not None:
        if record.failed_cases:
            refused = f"not saved: {len(record.failed_cases)} config(s) had failed repeats"
        else:
            written["baseline"] = record.save(options.save_baseline)
    written["history"] = write_history(options.history, record, comparison, baseline)
    if options.junit is not None and comparison is not None:
        written["junit"] = write_junit(comparison, record, options.junit)
    if options.html is not None:
        written["html"] = write_trend(load_history(options.history, suite.name), options.html)
    return BenchOutcome(suite=suite, record=record, comparison=comparison, written=written,
                        baseline_refused=refused, other=other,
                        baseline_record=baseline, priority_refused=priority.refused)
