"""`autoscale bench` as one library call: load, check, run, compare, write every output.

Bad input (a suite or baseline that cannot be read, a baseline from other hardware) is refused with a
UserError before any trial runs. The outcome says whether something regressed; the caller decides
the exit code, after every output has been written.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from autoscale.bench.compare import BenchComparison, compare_records
from autoscale.bench.history import DEFAULT_HISTORY, load_history, write_history
from autoscale.bench.junit import write_junit
from autoscale.bench.record import BenchRecord, check_hardware, environment, load_record
from autoscale.bench.runner import Observer, resolve_backend_and_nproc, run_suite
from autoscale.bench.suite import DEFAULT_THRESHOLD, Suite, load_suite
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
    slow_step_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class BenchOutcome:
    suite: Suite
    record: BenchRecord
    comparison: BenchComparison | None
    written: dict[str, Path]
    baseline_refused: str | None = None  # why --save-baseline did not write

    @property
    def regressed(self) -> bool:
        return bool(self.record.failed_cases) or bool(self.comparison and self.comparison.regressed)


def prepare(options: BenchOptions) -> tuple[Suite, BenchRecord | None]:
    """Everything that can be refused without running a trial."""
    if not 0 < options.threshold < 10:
        raise UserError(f"--threshold must be a fraction such as 0.05, got {options.threshold}")
    suite = load_suite(options.suite)
    baseline = load_record(options.baseline) if options.baseline is not None else None
    if baseline is not None:
        if baseline.suite != suite.name:
            raise UserError(f"baseline {str(options.baseline)!r} is of suite {baseline.suite!r}, not {suite.name!r}")
        backend, _ = resolve_backend_and_nproc(suite)
        hardware, _ = environment(backend)
        check_hardware(baseline, hardware, allow_mismatch=options.allow_hardware_mismatch)
    return suite, baseline


def run_bench(options: BenchOptions, observer: Observer | None = None) -> BenchOutcome:
    suite, baseline = prepare(options)
    with tempfile.TemporaryDirectory(prefix="autoscale-bench-") as scratch:
        workdir = options.workdir or Path(scratch)
        record = run_suite(suite, workdir=workdir, command=options.command, observer=observer,
                           fault=options.fault, slow_step_s=options.slow_step_s)
    comparison = None
    if baseline is not None:
        comparison = compare_records(baseline, record, suite, default_threshold=options.threshold)
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
                        baseline_refused=refused)
