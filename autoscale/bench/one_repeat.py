"""One repeat of one suite config, as a small stable command: what `autoscale bench --against PYTHON`
runs with each side's interpreter, so that each environment's own autoscale, DeepSpeed and torch are
the ones measured.

    python -m autoscale.bench.one_repeat --suite S --case NAME --out result.json [--workdir DIR]
    python -m autoscale.bench.one_repeat --probe          # prints this environment's versions as JSON

The result file is JSON: {"format": "autoscale-bench-repeat/1", "ok": bool, "reason": str,
"metrics": {"tokens_per_s": ..., "step_s": ..., "peak_bytes": ...}}. Exit 0 when the file was written
(read "ok" for the trial's outcome), 2 on bad input with one line on stderr. Keep this interface:
an older release installed as the other side answers to it. argparse (not typer) so it depends on
nothing that the two environments might have in different versions.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

FORMAT = "autoscale-bench-repeat/1"
PACED = "paced"  # a feature --probe lists: this entry point takes --pace (engine.pacing)


@dataclass(frozen=True, kw_only=True)
class RepeatResult:
    ok: bool
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> "RepeatResult":
        data = json.loads(Path(path).read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path} is not an {FORMAT} file")
        return cls(ok=bool(data["ok"]), reason=str(data.get("reason", "")), metrics=dict(data.get("metrics", {})))


def probe() -> dict:
    """Where this environment's autoscale lives and what it runs on: the other side's provenance."""
    import autoscale
    from autoscale.provenance import git_commit, versions

    return {"format": FORMAT, "python": sys.executable, "autoscale_path": str(Path(autoscale.__file__).parent),
            "git_commit": git_commit(), "versions": versions(), "features": [PACED]}


def run_one(suite_path: Path, case_name: str, workdir: Path, slow_step_s: float = 0.0,
            pace_socket: str | None = None, slow_fault: str = "slow") -> RepeatResult:
    from autoscale.bench.runner import metric_values, resolve_backend_and_nproc, trial_request
    from autoscale.bench.suite import load_suite
    from autoscale.engine import run_trial
    from autoscale.errors import UserError

    suite = load_suite(suite_path)
    case = next((c for c in suite.cases if c.name == case_name), None)
    if case is None:
        raise UserError(f"--case: suite {suite.name!r} has no config {case_name!r}")
    backend, nproc = resolve_backend_and_nproc(suite, case)
    result = run_trial(trial_request(case, backend=backend, nproc=nproc, workdir=workdir,
                                     fault=slow_fault if slow_step_s > 0 else None, slow_step_s=slow_step_s,
                                     pace_socket=pace_socket))
    return RepeatResult(ok=result.ok, reason=result.reason, metrics=metric_values(result) if result.ok else {})


def main(argv: list[str] | None = None) -> int:
    from autoscale.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m autoscale.bench.one_repeat", description=__doc__.splitlines()[0])
    parser.add_argument("--probe", action="store_true", help="print this environment's versions as JSON and exit")
    parser.add_argument("--suite", type=Path)
    parser.add_argument("--case")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path, help="the trial's folder (default: beside --out)")
    parser.add_argument("--pace", help="a Unix socket: an A/B conductor hands out the timed steps (engine.pacing)")
    parser.add_argument("--test-sleep-per-step", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--test-spin-per-step", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.probe:
        print(json.dumps(probe()))
        return 0
    try:
        for flag, value in (("--suite", args.suite), ("--case", args.case), ("--out", args.out)):
            if value is None:
                raise UserError(f"{flag} is required (or pass --probe)")
        for flag, value in (("--test-sleep-per-step", args.test_sleep_per_step),
                            ("--test-spin-per-step", args.test_spin_per_step)):
            if value < 0:
                raise UserError(f"{flag} must be 0 or more seconds, got {value}")
        workdir = args.workdir or args.out.with_suffix("")
        spin = args.test_spin_per_step > 0
        slow_step_s = args.test_spin_per_step if spin else args.test_sleep_per_step
        result = run_one(args.suite, args.case, workdir, slow_step_s, args.pace, "spin" if spin else "slow")
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"format": FORMAT, **asdict(result)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
