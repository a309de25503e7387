"""Kernel microbenchmarks as bench cases: each pytest-benchmark record becomes a case whose samples
are its rounds' times, so kernels go through the same statistics as the training configs.

pytest-benchmark writes the rounds only with `--benchmark-save-data`; without them there is no
spread to test, so such a file is refused rather than compared on its median alone.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

from autoscale.bench.record import CaseSamples
from autoscale.bench.suite import KernelSource
from autoscale.errors import UserError

PREFIX = "kernel:"


def cases_from_pytest_benchmark(report: dict, origin: str) -> dict[str, CaseSamples]:
    """One case per benchmark, named `kernel:<test name>`, with metric `time_s` (seconds per round)."""
    benchmarks = report.get("benchmarks") if isinstance(report, dict) else None
    if not isinstance(benchmarks, list):
        raise UserError(f"{origin} is not a pytest-benchmark JSON report (no 'benchmarks' list)")
    cases = {}
    for bench in benchmarks:
        rounds = (bench.get("stats") or {}).get("data")
        if not rounds:
            raise UserError(f"{origin}: benchmark {bench.get('fullname')!r} has no per-round times; "
                            "run pytest with --benchmark-save-data")
        definition = {"fullname": bench.get("fullname"), "params": bench.get("params"),
                      "extra_info": bench.get("extra_info", {})}
        cases[PREFIX + bench.get("name", bench.get("fullname", "?"))] = CaseSamples(
            kind="kernel", definition=definition, samples={"time_s": [float(t) for t in rounds]})
    return cases


def read_pytest_benchmark(path: Path) -> dict[str, CaseSamples]:
    try:
        report = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"kernel benchmark file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as error:
        raise UserError(f"kernel benchmark file {str(path)!r} is not JSON: {error}") from None
    return cases_from_pytest_benchmark(report, f"kernel benchmark file {str(path)!r}")


def run_kernel_benchmarks(source: KernelSource, workdir: Path) -> tuple[dict[str, CaseSamples], list[str]]:
    """Read the suite's JSON file, or run its pytest command with the JSON and the rounds switched on.

    Returns the cases and any failure (a command that failed or wrote nothing); a failing benchmark
    still leaves the others' timings, which are compared.
    """
    if source.json_path is not None:
        return read_pytest_benchmark(source.json_path), []
    return run_pytest_benchmark(shlex.split(source.command), workdir, source.timeout_s)


def run_pytest_benchmark(argv: list[str], workdir: Path, timeout_s: float, *, cwd: Path | None = None,
                         env: dict[str, str] | None = None) -> tuple[dict[str, CaseSamples], list[str]]:
    """Run a pytest command with its JSON report and per-round times switched on; its log and JSON go
    to `workdir`. (cases, failures), as `run_kernel_benchmarks`."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "kernels.json"
    out.unlink(missing_ok=True)
    command = [*argv, f"--benchmark-json={out}", "--benchmark-save-data"]
    failures = []
    with open(workdir / "kernels.log", "wb") as log:
        try:
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=cwd,
                                  env=env)
            if done.returncode != 0:
                failures.append(f"kernel command exited with code {done.returncode}; see {workdir / 'kernels.log'}")
        except subprocess.TimeoutExpired:
            failures.append(f"kernel command ran past {timeout_s:.0f} s")
        except OSError as error:
            raise UserError(f"kernel command {shlex.join(argv)!r} could not start: {error}") from None
    if not out.exists():
        return {}, failures or ["kernel command wrote no benchmark JSON"]
    return read_pytest_benchmark(out), failures
