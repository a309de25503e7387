"""Run a suite: every config `repeats` times, each repeat a fresh `run_trial` (new processes, so a
repeat's noise includes start-up, allocator and scheduling, as a nightly run's would).

A failed repeat is tried again up to the config's `retries` (default 1): on CPU a rank now and then
dies with SIGABRT at exit after its result is written (a gloo/shm teardown race), and one such flake
must not void a night's comparison. Retried failures are kept as `flaky` in the record; a repeat
that fails every attempt is a failure, and fails the run.

The one place with side effects besides the outputs; the statistics never see a process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from autoscale.bench.kernels import run_kernel_benchmarks
from autoscale.bench.load import LoadMonitor
from autoscale.bench.metrics import TRIAL_METRICS
from autoscale.bench.record import BenchRecord, CaseSamples, new_record
from autoscale.bench.suite import BenchCase, Suite
from autoscale.engine import TrialRequest, TrialResult, run_trial


class Observer(Protocol):
    def repeat_finished(self, case: BenchCase, repeat: int, result: TrialResult) -> None: ...


def resolve_backend_and_nproc(suite: Suite, case: BenchCase | None = None) -> tuple[str, int]:
    from autoscale.errors import UserError
    from autoscale.backend import default_nproc, resolve_backend

    try:
        backend = resolve_backend(suite.backend)
    except UserError as error:
        raise UserError(f"suite {suite.name!r} (backend: {suite.backend}): {error}") from None
    return backend, (case.nproc if case and case.nproc else default_nproc(backend))


def trial_request(case: BenchCase, *, backend: str, nproc: int, workdir: Path, fault: str | None = None,
                  slow_step_s: float = 0.0, pace_socket: str | None = None) -> TrialRequest:
    return TrialRequest(spec=case.spec, point=case.point, seq_len=case.seq_len, backend=backend, nproc=nproc,
                        workdir=workdir, timeout_s=case.timeout_s, measure=case.measure, ds_config=case.ds_config,
                        fault=fault, slow_step_s=slow_step_s, pace_socket=pace_socket)


def metric_values(result: TrialResult) -> dict[str, float]:
    """The bench metrics of one successful trial (a metric the backend cannot measure is left out)."""
    values = {name: metric.from_trial(result) for name, metric in TRIAL_METRICS.items()}
    return {name: value for name, value in values.items() if value is not None}


def run_case(case: BenchCase, *, backend: str, nproc: int, workdir: Path, observer: Observer | None = None,
             fault: str | None = None, slow_step_s: float = 0.0) -> CaseSamples:
    """`fault`/`slow_step_s` are the engine's test-only knobs, for tests and benchmarks/ only."""
    samples: dict[str, list[float]] = {name: [] for name in TRIAL_METRICS}
    failures, flaky = [], []
    for repeat in range(case.repeats):
        failed_attempts = []
        for attempt in range(case.retries + 1):
            result = run_trial(trial_request(case, backend=backend, nproc=nproc,
                                             workdir=workdir / case.name / f"repeat{repeat}-{attempt}",
                                             fault=fault, slow_step_s=slow_step_s))
            if observer is not None:
                observer.repeat_finished(case, repeat, result)
            if result.ok:
                break
            failed_attempts.append(f"repeat {repeat}, attempt {attempt + 1}: {result.reason}")
        if not result.ok:
            failures.extend(failed_attempts)
            continue
        flaky.extend(failed_attempts)
        for name, value in metric_values(result).items():
            samples[name].append(value)
    definition = {**case.definition(), "nproc": nproc}
    return CaseSamples(kind="trial", definition=definition, samples=samples, failures=failures, flaky=flaky)


def run_suite(suite: Suite, *, workdir: Path, command: list[str] = (), observer: Observer | None = None,
              fault: str | None = None, slow_step_s: float = 0.0) -> BenchRecord:
    backend, _ = resolve_backend_and_nproc(suite)
    cases: dict[str, CaseSamples] = {}
    with LoadMonitor() as load:
        for case in suite.cases:
            _, nproc = resolve_backend_and_nproc(suite, case)
            cases[case.name] = run_case(case, backend=backend, nproc=nproc, workdir=workdir, observer=observer,
                                        fault=fault, slow_step_s=slow_step_s)
        if suite.kernels is not None:
            kernel_cases, failures = run_kernel_benchmarks(suite.kernels, workdir / "kernels")
            cases.update(kernel_cases)
            if failures:
                cases["kernel:run"] = CaseSamples(kind="kernel", definition={"command": suite.kernels.command},
                                                  samples={}, failures=failures)
    return new_record(suite.name, backend, cases, list(command), load=load.result)
