"""How often does `autoscale bench` cry wolf, and how small a slowdown does it catch, on this machine?

Runs a suite (default ci/suites/cpu-smoke.yaml) once as the baseline and then N more times unchanged,
comparing each run with the baseline exactly as `autoscale bench --baseline` does. Prints:

1. every unchanged run's ratio [interval], p-value and verdict per metric, and how many runs were
   flagged (false alarms), also at a few other thresholds;
2. a sweep of injected slowdowns (2% to 100% of the baseline's median step time) and in how many of
   the N runs each was detected;
3. the same two counts over every ordered pair of the N+1 runs (each run once the baseline of every
   other), so that the figures do not hinge on the load during the one baseline run.

Injection (--injection):
- `add` (default): the slowdown is added to the step times measured in each unchanged run, d seconds
  per optimizer step, and tokens/s recomputed from them: exactly what a sleep inside the timed step
  would do, on this machine's real run-to-run noise, without N more runs per slowdown.
- `sleep`: real runs with the engine's test-only fault="slow" (what `autoscale bench
  --test-sleep-per-step` sets): every rank sleeps inside every timed step. `--sleep-runs` runs per
  slowdown, each compared with the baseline; end to end, including the noise of the slowed runs.

    python benchmarks/bench_false_alarms.py                     # ~10 minutes on 2 shared cores
    python benchmarks/bench_false_alarms.py --runs 20 --out bench-fa
    python benchmarks/bench_false_alarms.py --reuse --out bench-fa   # tables again, no new runs
    python benchmarks/bench_false_alarms.py --injection sleep --slowdowns 0.05,0.1,0.2,0.3

A/B mode (`--ab`), the nightly job's mode: at each `--load-levels` count of seeded background jobs
(default 0 and 8: load average about 0-4 and 8-16 on 2 cores), `--ab-unchanged` A/B runs of unchanged
code and `--ab-runs` runs each of a 10% extra-work (`spin`) and a 10% waiting (`sleep`) slowdown of the
candidate side, each one `autoscale bench --against` (`benchmarks/bench_ab.py` runs them and prints
every run's verdict, the rounds it took and its wall time).

    python benchmarks/bench_false_alarms.py --ab --out /tmp/fa-ab      # the issue's protocol: hours
    python benchmarks/bench_false_alarms.py --ab --ab-unchanged 4 --ab-runs 2 --load-levels 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from autoscale.bench.compare import compare_records
from autoscale.bench.record import BenchRecord, CaseSamples, load_record
from autoscale.bench.runner import run_suite
from autoscale.bench.stats import IMPROVED
from autoscale.bench.defaults import DEFAULT_THRESHOLD
from autoscale.bench.suite import Suite, load_suite

TIME_METRICS = ("step_s",)  # tokens/s is step time restated and not judged


def flagged(baseline: BenchRecord, candidate: BenchRecord, suite: Suite, threshold: float) -> list[str]:
    comparison = compare_records(baseline, candidate, suite, default_threshold=threshold)
    return [f"{row.case}/{row.metric}" for row in comparison.regressions]


def time_regressed(baseline: BenchRecord, candidate: BenchRecord, suite: Suite, threshold: float) -> bool:
    return any(f.split("/")[1] in TIME_METRICS for f in flagged(baseline, candidate, suite, threshold))


def improved(baseline: BenchRecord, candidate: BenchRecord, suite: Suite, threshold: float) -> bool:
    comparison = compare_records(baseline, candidate, suite, default_threshold=threshold)
    return any(row.verdict == IMPROVED for row in comparison.rows)


def pairwise(records: list[BenchRecord], suite: Suite, thresholds: list[float], slowdowns: list[float]) -> None:
    """Every run as the baseline of every other: false alarms and detections over all ordered pairs."""
    pairs = [(a, b) for a in records for b in records if a is not b]
    plain = replace(suite, thresholds={})
    print(f"\n## All {len(pairs)} ordered pairs of the {len(records)} unchanged runs (baseline, candidate)\n")
    print("| threshold | pairs flagged as a regression | pairs reported as an improvement |\n|---|---|---|")
    for threshold in thresholds:
        regressions = sum(bool(flagged(a, b, plain, threshold)) for a, b in pairs)
        improvements = sum(improved(a, b, plain, threshold) for a, b in pairs)
        print(f"| {threshold:.0%} | {regressions} of {len(pairs)} | {improvements} of {len(pairs)} |")
    print(f"\n| slowdown added to the candidate | pairs where it is detected (threshold {DEFAULT_THRESHOLD:.0%}) |"
          "\n|---|---|")
    for slowdown in slowdowns:
        hits = sum(time_regressed(a, add_step_time(b, suite, slowdown, a), suite, DEFAULT_THRESHOLD)
                   for a, b in pairs)
        print(f"| {slowdown:.0%} | {hits} of {len(pairs)} |")


def add_step_time(record: BenchRecord, suite: Suite, slowdown: float, baseline: BenchRecord) -> BenchRecord:
    """The record as if every timed optimizer step took `slowdown` x the baseline's median step longer."""
    cases = {}
    for case in suite.cases:
        measured = record.cases[case.name]
        extra_s = slowdown * statistics.median(baseline.cases[case.name].samples["step_s"])
        tokens_per_step = case.point.global_batch(measured.definition["nproc"]) * case.seq_len
        samples = dict(measured.samples)
        samples["step_s"] = [s + extra_s for s in measured.samples["step_s"]]
        samples["tokens_per_s"] = [tokens_per_step / (tokens_per_step / t + extra_s)
                                   for t in measured.samples["tokens_per_s"]]
        cases[case.name] = CaseSamples(kind=measured.kind, definition=measured.definition, samples=samples,
                                       failures=measured.failures, flaky=measured.flaky)
    return replace(record, cases=cases)


def run(suite: Suite, out: Path, label: str, **fault) -> BenchRecord:
    started = time.monotonic()
    record = run_suite(suite, workdir=out / "trials" / label, **fault)
    record.save(out / f"{label}.json")
    flaky = sum(len(c.flaky) for c in record.cases.values())
    print(f"  {label}: {time.monotonic() - started:.0f} s" + (f", {flaky} flaky attempt(s) retried" if flaky else ""),
          file=sys.stderr, flush=True)
    return record


def ab_levels(args) -> int:
    """The A/B protocol at each load level, one bench_ab run each (its records under --out/load<N>)."""
    import bench_ab  # beside this script

    for jobs in (int(level) for level in args.load_levels.split(",")):
        print(f"\n# A/B at {jobs} background jobs\n", flush=True)
        bench_ab.main(["--suite", str(args.suite), "--runs", str(args.ab_runs), "--unchanged-runs",
                       str(args.ab_unchanged), "--slowdowns", "spin:0.1,sleep:0.1", "--background-jobs", str(jobs),
                       "--out", str(args.out / f"load{jobs}"), *(["--reuse"] if args.reuse else [])])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path("ci/suites/cpu-smoke.yaml"))
    parser.add_argument("--runs", type=int, default=10, help="unchanged runs compared with the baseline")
    parser.add_argument("--slowdowns", default="0.02,0.05,0.1,0.2,0.3")
    parser.add_argument("--thresholds", default="0.05,0.1,0.2", help="false alarms are also counted at these")
    parser.add_argument("--injection", choices=("add", "sleep"), default="add")
    parser.add_argument("--sleep-runs", type=int, default=3, help="real runs per slowdown with --injection sleep")
    parser.add_argument("--out", type=Path, default=Path("bench-false-alarms"))
    parser.add_argument("--reuse", action="store_true", help="read the runs saved in --out instead of running")
    parser.add_argument("--ab", action="store_true", help="A/B mode (above); the options below apply to it")
    parser.add_argument("--ab-unchanged", type=int, default=20, help="A/B runs of unchanged code per load level")
    parser.add_argument("--ab-runs", type=int, default=10, help="A/B runs of each slowdown per load level")
    parser.add_argument("--load-levels", default="0,8", help="background jobs per level, comma-separated")
    args = parser.parse_args(argv)
    if args.ab:
        return ab_levels(args)
    suite = load_suite(args.suite)
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    if args.reuse:
        baseline = load_record(args.out / "baseline.json")
        runs = [load_record(path) for path in sorted(args.out.glob("run[0-9]*.json"))][:args.runs]
    else:
        print(f"suite {suite.name}: baseline + {args.runs} unchanged runs", file=sys.stderr)
        baseline = run(suite, args.out, "baseline")
        runs = [run(suite, args.out, f"run{i + 1:02d}") for i in range(args.runs)]

    print(f"\n## Unchanged runs against the baseline (suite {suite.name}, thresholds as in the suite, "
          f"else {DEFAULT_THRESHOLD:.0%})\n")
    metrics = [f"{case}/{metric}" for case, c in baseline.cases.items() for metric in c.samples]
    print("| run | " + " | ".join(metrics) + " | flagged |")
    print("|---|" + "---|" * (len(metrics) + 1))
    alarms = 0
    for i, record in enumerate(runs):
        comparison = compare_records(baseline, record, suite)
        cells = [f"{row.comparison.ratio:.3f} [{row.comparison.ci_low:.3f}, {row.comparison.ci_high:.3f}] "
                 f"p={row.comparison.p_value:.2f} {row.verdict}" if row.comparison.ratio is not None
                 else row.verdict for row in comparison.rows]
        alarms += comparison.regressed
        print(f"| {i + 1} | " + " | ".join(cells) + f" | {'YES' if comparison.regressed else 'no'} |")
    print(f"\nfalse alarms: {alarms} of {len(runs)} unchanged runs flagged\n")
    print("| threshold (all metrics) | unchanged runs flagged |\n|---|---|")
    for threshold in thresholds:
        at = sum(bool(flagged(baseline, r, replace(suite, thresholds={}), threshold)) for r in runs)
        print(f"| {threshold:.0%} | {at} of {len(runs)} |")

    base_step = statistics.median(baseline.cases[suite.cases[0].name].samples["step_s"])
    print(f"\n## Injected slowdowns ({args.injection}; baseline median step {base_step * 1e3:.1f} ms)\n")
    print("| slowdown | added per step | detected (tokens/s or step time regressed) |\n|---|---|---|")
    smallest = None
    for slowdown in slowdowns:
        if args.injection == "add":
            hits = sum(time_regressed(baseline, add_step_time(r, suite, slowdown, baseline), suite,
                                      DEFAULT_THRESHOLD) for r in runs)
            total = len(runs)
        else:
            slowed = [load_record(path) if args.reuse and path.exists()
                      else run(suite, args.out, path.stem, fault="slow", slow_step_s=slowdown * base_step)
                      for path in (args.out / f"sleep{slowdown:g}-{i + 1}.json" for i in range(args.sleep_runs))]
            hits = sum(time_regressed(baseline, record, suite, DEFAULT_THRESHOLD) for record in slowed)
            total = len(slowed)
        print(f"| {slowdown:.0%} | {slowdown * base_step * 1e3:.1f} ms | {hits} of {total} |")
        if smallest is None and hits == total:
            smallest = slowdown
    print(f"\nsmallest slowdown detected in every run: {f'{smallest:.0%}' if smallest is not None else 'none'}")
    if args.injection == "add":
        pairwise([baseline, *runs], suite, thresholds, slowdowns)
    (args.out / "summary.json").write_text(json.dumps({"false_alarms": alarms, "runs": len(runs),
                                                       "smallest_detected": smallest}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
