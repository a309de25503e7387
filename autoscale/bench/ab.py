"""A/B mode: every config measured alternately with this environment (the candidate) and another
environment's interpreter (the baseline, e.g. the last release in a second venv), in one job.

Round i starts both sides' trials together and lets them take turns step by step (`run_paced_case`,
`bench.interleave`), so the load of the moment weighs on both alike. After the suite's `rounds`, rounds
are added while a verdict is undecided (`paired.decided`), up to `max_rounds` or `budget_s`. Against an autoscale older than
paced rounds (its `one_repeat --probe` lists no `paced` feature), round i runs one whole repeat of
each side back to back instead (`run_ab_case`), in ABBA order over the rounds (baseline first in even
rounds), so a load that builds up or fades during the job weighs on both sides alike. Both sides run
`python -m autoscale.bench.one_repeat` with their own interpreter, so the two are launched the same
way and each environment's own autoscale, DeepSpeed and torch are measured. A round in which either
side failed every attempt is dropped: the statistics need pairs.

A suite's kernel microbenchmarks (`run_ab_kernels`) run the same way at a coarser grain: round i runs
the suite's pytest command once with each side's interpreter, in ABBA order.
"""

from __future__ import annotations

import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from autoscale.bench.compare import compare_metric
from autoscale.bench.defaults import DEFAULT_THRESHOLD
from autoscale.bench.interleave import paced_round, start_side
from autoscale.bench.kernels import run_pytest_benchmark
from autoscale.bench.load import LoadMonitor
from autoscale.bench.metrics import METRICS
from autoscale.bench.one_repeat import PACED, RepeatResult
from autoscale.bench.paired import decided
from autoscale.bench.record import BenchRecord, CaseSamples, new_record
from autoscale.bench.runner import resolve_backend_and_nproc
from autoscale.bench.suite import BenchCase, KernelSource, Suite
from autoscale.errors import UserError

BASELINE, CANDIDATE = "baseline", "candidate"
PROBE_TIMEOUT_S = 120
ENTRY = ["-m", "autoscale.bench.one_repeat"]
OWN_ROOT = str(Path(__file__).resolve().parents[2])  # the folder holding this process's autoscale package
PYTHON_NAMES = ("python", "python3")


class RoundObserver(Protocol):
    def side_finished(self, case: BenchCase, round_index: int, side: str, result: RepeatResult) -> None: ...


def abba_order(rounds: int) -> list[tuple[int, str]]:
    """(round, side) in run order: A B, B A, A B, ... with A the baseline."""
    order = []
    for index in range(rounds):
        sides = (BASELINE, CANDIDATE) if index % 2 == 0 else (CANDIDATE, BASELINE)
        order.extend((index, side) for side in sides)
    return order


def probe_interpreter(python: Path) -> dict:
    """Check --against up front: it exists, runs, and its autoscale has the one-repeat entry point."""
    if not Path(python).is_file():
        raise UserError(f"--against {str(python)!r}: no such file (give a Python interpreter, e.g. .venv-base/bin/python)")
    if not os.access(python, os.X_OK):
        raise UserError(f"--against {str(python)!r}: not executable")
    try:
        with tempfile.TemporaryDirectory(prefix="autoscale-probe-") as neutral:  # no checkout on sys.path
            out = subprocess.run([str(Path(python).absolute()), *ENTRY, "--probe"], capture_output=True,
                                 text=True, timeout=PROBE_TIMEOUT_S, cwd=neutral, env=side_environment(BASELINE))
    except (OSError, subprocess.TimeoutExpired) as error:
        raise UserError(f"--against {str(python)!r}: could not run it ({error})") from None
    last_line = (out.stderr.strip().splitlines() or ["no output"])[-1]
    if out.returncode != 0:
        raise UserError(f"--against {str(python)!r}: its environment cannot run autoscale.bench.one_repeat "
                        f"(install autoscale there; {last_line})")
    try:
        found = json.loads(out.stdout.strip().splitlines()[-1])
        return {"git_commit": found["git_commit"], "versions": found["versions"], "python": str(python),
                "autoscale_path": found["autoscale_path"], "features": list(found.get("features", []))}
    except (ValueError, KeyError, IndexError):
        raise UserError(f"--against {str(python)!r}: unexpected answer to --probe: {out.stdout[:200]!r}") from None


def side_environment(side: str) -> dict[str, str]:
    """The candidate side imports the autoscale this process runs (put first on PYTHONPATH); the baseline
    side inherits the environment as it is, so its interpreter finds its own installed autoscale."""
    env = dict(os.environ)
    if side == CANDIDATE:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [OWN_ROOT, env.get("PYTHONPATH")]))
    return env


@dataclass(frozen=True)
class Slowdown:
    """Test only: what the candidate side adds to every step, so that detection can be measured."""

    step_s: float = 0.0
    kind: str = "sleep"  # "sleep": time lost waiting; "spin": extra CPU work

    def flags(self) -> list[str]:
        return [f"--test-{self.kind}-per-step", repr(self.step_s)] if self.step_s > 0 else []


NO_SLOWDOWN = Slowdown()


def side_command(python: str, suite: Suite, case: BenchCase, folder: Path, slowdown: Slowdown) -> list[str]:
    """One repeat of `case` with `python`, its result in `folder`/result.json."""
    return [python, *ENTRY, "--suite", str(suite.path.resolve()), "--case", case.name,
            "--out", str(folder / "result.json"), "--workdir", str(folder / "trial"), *slowdown.flags()]


def run_side(python: str, suite: Suite, case: BenchCase, folder: Path, slowdown: Slowdown,
             side: str = CANDIDATE) -> RepeatResult:
    """One repeat of `case` with `python`, in a fresh process; a crash of the entry point is a failed repeat.
    It runs in its own folder: `python -m` puts the working directory first on sys.path, and a checkout
    there would shadow the other environment's installed autoscale."""
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "result.json"
    try:
        done = subprocess.run(side_command(python, suite, case, folder, slowdown), capture_output=True,
                              text=True, timeout=case.timeout_s + PROBE_TIMEOUT_S,
                              cwd=folder, env=side_environment(side))
    except subprocess.TimeoutExpired:
        return RepeatResult(ok=False, reason=f"timeout: one_repeat ran past {case.timeout_s + PROBE_TIMEOUT_S:.0f} s")
    if done.returncode != 0 or not out.exists():
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return RepeatResult(ok=False, reason=f"crash: one_repeat exited {done.returncode}: {tail}")
    try:
        return RepeatResult.read(out)
    except (ValueError, KeyError) as error:
        return RepeatResult(ok=False, reason=f"crash: unreadable result: {error}")


def run_ab_case(case: BenchCase, suite: Suite, *, against: str, workdir: Path, rounds: int,
                observer: RoundObserver | None, slowdown: Slowdown) -> dict[str, CaseSamples]:
    pythons = {BASELINE: str(Path(against).absolute()), CANDIDATE: sys.executable}
    results: dict[int, dict[str, RepeatResult]] = {}
    failures = {BASELINE: [], CANDIDATE: []}
    flaky = {BASELINE: [], CANDIDATE: []}
    for index, side in abba_order(rounds):
        attempts = []
        for attempt in range(case.retries + 1):
            folder = workdir / case.name / f"round{index}-{side}-{attempt}"
            result = run_side(pythons[side], suite, case, folder, slowdown if side == CANDIDATE else NO_SLOWDOWN,
                              side)
            if observer is not None:
                observer.side_finished(case, index, side, result)
            if result.ok:
                break
            attempts.append(f"round {index}, attempt {attempt + 1}: {result.reason}")
        (flaky if result.ok else failures)[side].extend(attempts)
        results.setdefault(index, {})[side] = result
    complete = [index for index in range(rounds) if all(r.ok for r in results[index].values())]
    _, nproc = resolve_backend_and_nproc(suite, case)
    definition = {**case.definition(), "nproc": nproc, "rounds": rounds}
    cases = {}
    for side in (BASELINE, CANDIDATE):
        names = sorted({name for index in complete for name in results[index][side].metrics})
        samples = {name: [results[index][side].metrics[name] for index in complete] for name in names}
        cases[side] = CaseSamples(kind="trial", definition=definition, samples=samples, failures=failures[side],
                                  flaky=flaky[side])
    return cases


def undecided_metrics(values: dict[str, list[dict]], case: BenchCase, suite: Suite,
                      default_threshold: float) -> list[str]:
    """The judged metrics whose paired verdict more rounds could still change (`paired.decided`)."""
    samples = {side: _by_metric(rounds) for side, rounds in values.items()}
    undecided = []
    for name in sorted(set(samples[BASELINE]) & set(samples[CANDIDATE])):
        metric = METRICS.get(name)
        if metric is None or not metric.judged:
            continue
        comparison = compare_metric(samples[BASELINE][name], samples[CANDIDATE][name],
                                    higher_is_better=metric.higher_is_better,
                                    threshold=suite.threshold(case.name, name, default_threshold), suite=suite,
                                    paired=True)
        if not decided(comparison):
            undecided.append(name)
    return undecided


def run_paced_case(case: BenchCase, suite: Suite, *, against: str, workdir: Path,
                   observer: RoundObserver | None, slowdown: Slowdown,
                   default_threshold: float = DEFAULT_THRESHOLD) -> dict[str, CaseSamples]:
    """Rounds that each start both sides together and let them take turns step by step
    (`bench.interleave`); a failed round is tried again, up to `case.retries` times. After
    `case.rounds` rounds, rounds are added while a judged metric's verdict is undecided, until
    `case.max_rounds` or `case.budget_s` of wall time; a verdict still undecided then is inconclusive."""
    pythons = {BASELINE: str(Path(against).absolute()), CANDIDATE: sys.executable}
    values: dict[str, list[dict]] = {BASELINE: [], CANDIDATE: []}
    failures, flaky = {BASELINE: [], CANDIDATE: []}, {BASELINE: [], CANDIDATE: []}
    started = time.monotonic()
    for index in range(case.max_rounds):
        if index >= case.rounds and (time.monotonic() - started > case.budget_s
                                     or not undecided_metrics(values, case, suite, default_threshold)):
            break
        attempts = []
        for attempt in range(case.retries + 1):
            folder = (workdir / case.name / f"round{index}-{attempt}").resolve()
            order = (BASELINE, CANDIDATE) if index % 2 == 0 else (CANDIDATE, BASELINE)
            sides = [start_side(side, side_command(pythons[side], suite, case, folder / side,
                                                   slowdown if side == CANDIDATE else NO_SLOWDOWN),
                                folder=folder / side, env=side_environment(side))
                     for side in order]
            measured, failure = paced_round(sides, turns=case.turns, ready_timeout_s=case.timeout_s)
            if observer is not None:
                for side in (BASELINE, CANDIDATE):
                    observer.side_finished(case, index, side, RepeatResult(ok=failure is None, reason=failure or "",
                                                                           metrics=measured[side]))
            if failure is None:
                break
            attempts.append(f"round {index}, attempt {attempt + 1}: {failure}")
        for side in (BASELINE, CANDIDATE):
            (flaky if failure is None else failures)[side].extend(attempts)
            if failure is None:
                values[side].append(measured[side])
    _, nproc = resolve_backend_and_nproc(suite, case)
    definition = {**case.definition(), "nproc": nproc, "rounds": case.rounds, "max_rounds": case.max_rounds,
                  "budget_s": case.budget_s, "turns": case.turns}
    return {side: CaseSamples(kind="trial", definition=definition, samples=_by_metric(values[side]),
                              failures=failures[side], flaky=flaky[side]) for side in (BASELINE, CANDIDATE)}


def check_kernels_for_ab(source: KernelSource) -> None:
    """A/B mode runs the kernel command with each side's interpreter, so it must be a command it can rerun
    and that starts with `python`."""
    if source.json_path is not None:
        raise UserError("--against: the suite's kernels are read from a file (kernels: {json: ...}), which A/B mode "
                        "cannot measure again with the other environment; give kernels.command instead")
    argv = shlex.split(source.command)
    if not argv or Path(argv[0]).name not in PYTHON_NAMES:
        raise UserError(f"--against: kernels.command must start with python, which each side replaces with its own "
                        f"interpreter; got {source.command!r}")


def kernel_command(source: KernelSource, python: str) -> list[str]:
    return [python, *shlex.split(source.command)[1:]]


def run_ab_kernels(source: KernelSource, *, against: str, workdir: Path) -> dict[str, dict[str, CaseSamples]]:
    """Per side, the kernel cases of `source.rounds` rounds, each one run of the suite's pytest command with
    that side's interpreter, in ABBA order and in a folder of its own (so the command must name its tests
    as a module, `--pyargs autoscale.kernels.bench`: a path would be looked up there). A benchmark's value in a
    round is the median of its pytest-benchmark rounds in that run; a round in which either side lacks
    it (a failed or skipped benchmark) is dropped for that benchmark."""
    pythons = {BASELINE: str(Path(against).absolute()), CANDIDATE: sys.executable}
    runs: dict[str, list[dict[str, CaseSamples]]] = {BASELINE: [], CANDIDATE: []}
    failures: dict[str, list[str]] = {BASELINE: [], CANDIDATE: []}
    for index, side in abba_order(source.rounds):
        folder = (workdir / "kernels" / f"round{index}-{side}").resolve()
        cases, failed = run_pytest_benchmark(kernel_command(source, pythons[side]), folder, source.timeout_s,
                                             cwd=folder, env=side_environment(side))
        runs[side].append(cases)
        failures[side].extend(f"round {index}: {reason}" for reason in failed)
    measured: dict[str, dict[str, CaseSamples]] = {BASELINE: {}, CANDIDATE: {}}
    for name in sorted({name for side_runs in runs.values() for cases in side_runs for name in cases}):
        complete = [index for index in range(source.rounds)
                    if name in runs[BASELINE][index] and name in runs[CANDIDATE][index]]
        for side, side_runs in runs.items():
            found = [cases[name] for cases in side_runs if name in cases]
            definition = {**found[0].definition, "rounds": source.rounds} if found else {"rounds": source.rounds}
            samples = [statistics.median(side_runs[index][name].samples["time_s"]) for index in complete]
            measured[side][name] = CaseSamples(kind="kernel", definition=definition, samples={"time_s": samples})
    for side, reasons in failures.items():
        if reasons:
            measured[side]["kernel:run"] = CaseSamples(kind="kernel", definition={"command": source.command},
                                                       samples={}, failures=reasons)
    return measured


def _by_metric(rounds: list[dict[str, float]]) -> dict[str, list[float]]:
    names = sorted({name for values in rounds for name in values})
    return {name: [values[name] for values in rounds if name in values] for name in names}


def run_ab(suite: Suite, *, against: Path, other: dict, workdir: Path, command: list[str] = (),
           observer: RoundObserver | None = None, slowdown: Slowdown = NO_SLOWDOWN,
           default_threshold: float = DEFAULT_THRESHOLD) -> tuple[BenchRecord, BenchRecord]:
    """(baseline record, candidate record) whose samples pair up round by round, config by config.
    `other` is `probe_interpreter(against)`; `slowdown` (test only) slows the candidate side."""
    backend, _ = resolve_backend_and_nproc(suite)
    sides: dict[str, dict[str, CaseSamples]] = {BASELINE: {}, CANDIDATE: {}}
    with LoadMonitor() as load:
        for case in suite.cases:
            if PACED in other.get("features", ()):
                measured = run_paced_case(case, suite, against=str(against), workdir=workdir, observer=observer,
                                          slowdown=slowdown, default_threshold=default_threshold)
            else:  # an autoscale older than paced rounds: whole repeats alternate
                measured = run_ab_case(case, suite, against=str(against), workdir=workdir, rounds=case.rounds,
                                       observer=observer, slowdown=slowdown)
            for side, samples in measured.items():
                sides[side][case.name] = samples
        if suite.kernels is not None:
            for side, cases in run_ab_kernels(suite.kernels, against=str(against), workdir=workdir).items():
                sides[side].update(cases)
    baseline = new_record(suite.name, backend, sides[BASELINE], [str(against), *ENTRY], load=load.result,
                          provenance=other)
    candidate = new_record(suite.name, backend, sides[CANDIDATE], list(command), load=load.result)
    return baseline, candidate
