"""A/B mode against stored-baseline mode on this machine, as it is (other jobs' load included):
false alarms in unchanged runs, detection of injected slowdowns, and the wall time of an A/B run.

Each A/B run is what `autoscale bench --suite S --against PYTHON` does (ab.run_ab, then the paired
comparison). Conditions take turns (unchanged, then each slowdown, then unchanged again, ...) so
that a change in the machine's load over the benchmark spreads over all of them. A slowdown is one of
the engine's test-only faults inside every timed step of the candidate side only: `sleep` (time lost
waiting, `--test-sleep-per-step`), sized as a fraction of the latest measured median step time, or
`spin` (extra CPU work on every rank), sized as a fraction of the latest median CPU time per step;
"latest" is the previous A/B run's baseline side (at first the stored baseline), since other jobs'
load moves step time 2-4x within minutes. The table also shows what the slowdown actually was,
relative to each run's own baseline side.

The stored-baseline mode is measured in the same runs: one baseline run at the start (`run_suite`,
what `--save-baseline` records), and every A/B run's candidate side (a real run of the unchanged or
slowed code, with the host's load recorded during it) compared with that baseline as
`autoscale bench --baseline` compares, load check included.

Each niceness in `--nice` (an adjustment, as `autoscale bench --nice` takes it; `bench.priority`)
gets its own stored baseline and its own `--runs` count, and the levels take turns run by run, so
they are compared under the same load. `--background-jobs N` starts N bursty CPU-bound jobs for the
whole benchmark (each busy 0.2-3 s, then idle 0-1 s, seeded), a load that can be asked for again on
another machine; the machine's own load comes on top.

    python benchmarks/bench_ab.py                         # 3 runs per condition: ~1 h on 2 busy cores
    python benchmarks/bench_ab.py --runs 10,3 --nice=-20,0 --background-jobs 6 --out /tmp/ab
    python benchmarks/bench_ab.py --runs 10 --against .venv-base/bin/python --out /tmp/ab
    python benchmarks/bench_ab.py --reuse --out /tmp/ab      # the tables again from saved runs
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from autoscale.bench.ab import Slowdown, probe_interpreter, run_ab
from autoscale.bench.compare import BenchComparison, compare_records
from autoscale.bench.priority import DEFAULT_NICE, raised_priority
from autoscale.bench.record import BenchRecord, load_record
from autoscale.bench.runner import run_suite
from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, REGRESSED
from autoscale.bench.suite import load_suite

TIME_METRICS = ("step_s", "step_cpu_s")  # tokens/s is step time restated and not judged
SIZED_BY = {"sleep": "step_s", "spin": "step_cpu_s"}  # the metric a slowdown of each kind is a fraction of
BURSTY_JOB = """
import random, sys, time
rng = random.Random(int(sys.argv[1]))
while True:
    busy_until = time.monotonic() + rng.uniform(0.2, 3.0)
    while time.monotonic() < busy_until:
        pass
    time.sleep(rng.uniform(0.0, 1.0))
"""


@contextmanager
def background_jobs(count: int, seed: int):
    """`count` bursty CPU-bound processes at the default niceness, in a process group of their own, for
    the duration of the block."""
    if count <= 0:
        yield
        return
    leader = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1e9)"], process_group=0)
    jobs = [subprocess.Popen([sys.executable, "-c", BURSTY_JOB, str(seed + index)], process_group=leader.pid)
            for index in range(count)]
    try:
        yield
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        for process in (leader, *jobs):
            process.wait()


def verdicts(comparison: BenchComparison) -> dict[str, str]:
    return {f"{row.case}/{row.metric}": row.verdict for row in comparison.rows}


def outcome(comparison: BenchComparison) -> str:
    """regressed (a time metric regressed), improved, inconclusive, or unchanged."""
    found = {row.verdict for row in comparison.rows if row.metric in TIME_METRICS}
    for verdict in (REGRESSED, IMPROVED, INCONCLUSIVE):
        if verdict in found:
            return verdict
    return "unchanged"


def metric_cell(comparison: BenchComparison, metric: str) -> str:
    row = next((r for r in comparison.rows if r.metric == metric), None)
    if row is None:
        return "-"
    c = row.comparison
    if c.ratio is None:
        return row.verdict
    return f"{c.ratio:.3f} [{c.ci_low:.3f}, {c.ci_high:.3f}] p={c.p_value:.3f} {row.verdict}"


def load_cell(record: BenchRecord) -> str:
    load = record.load or {}
    steal = load.get("steal_fraction_during")
    return f"{load.get('loadavg_1m_during') or float('nan'):.2f}" + (f", steal {steal:.1%}" if steal else "")


def count(results: list[dict], mode: str, condition: str, verdict: str, nice: int) -> str:
    chosen = [r for r in results if r["condition"] == condition and r["nice"] == nice]
    return f"{sum(r[mode] == verdict for r in chosen)}/{len(chosen)}"


def judge(suite, baseline: BenchRecord, base_side: BenchRecord, cand_side: BenchRecord, *, run: int,
          condition: str, slow_s: float, wall_s: float, nice: int) -> dict:
    """Both modes' verdicts on one A/B run: paired against its own baseline side, unpaired against the
    stored baseline of the same niceness."""
    ab = compare_records(base_side, cand_side, suite, paired=True)
    stored = compare_records(baseline, cand_side, suite)
    sized_by = SIZED_BY[condition.split()[0]] if condition != "unchanged" else "step_s"
    side_value = statistics.median(base_side.cases[suite.cases[0].name].samples[sized_by])
    rounds = len(cand_side.cases[suite.cases[0].name].samples.get("step_s", []))
    return {"run": run, "condition": condition, "nice": nice, "wall_s": wall_s, "slow_s": slow_s, "rounds": rounds,
            "ab": outcome(ab), "stored": outcome(stored), "ab_step": metric_cell(ab, "step_s"),
            "stored_step": metric_cell(stored, "step_s"),
            "ab_cpu": metric_cell(ab, "step_cpu_s"), "load": load_cell(cand_side), "effective": slow_s / side_value,
            "ab_verdicts": verdicts(ab), "stored_verdicts": verdicts(stored)}


def baseline_path(out: Path, nice: int) -> Path:
    return out / f"stored-baseline-nice{nice}.json"


def reuse(out: Path, suite) -> tuple[dict[int, BenchRecord], list[dict], list[str]]:
    """The saved runs of an earlier (or interrupted) benchmark, judged again by the current code."""
    baselines = {record.nice: record for record in map(load_record, out.glob("stored-baseline-nice*.json"))}
    results, conditions = [], ["unchanged"]
    for path in sorted(out.glob("run*.json"), key=lambda p: p.stat().st_mtime):
        saved = json.loads(path.read_text())
        base_side, cand_side = (BenchRecord.from_dict(saved[key]) for key in ("baseline_side", "candidate_side"))
        results.append(judge(suite, baselines[cand_side.nice], base_side, cand_side, run=saved["run"],
                             condition=saved["condition"], slow_s=saved["slow_s"], wall_s=saved["wall_s"],
                             nice=cand_side.nice))
        if saved["condition"] not in conditions:
            conditions.append(saved["condition"])
    return baselines, results, conditions


def step_ms(record: BenchRecord, suite) -> float:
    return statistics.median(record.cases[suite.cases[0].name].samples["step_s"]) * 1e3


def report(results: list[dict], suite, baselines: dict[int, BenchRecord], conditions: list[str]) -> None:
    stored = ", ".join(f"nice {nice}: median step {step_ms(b, suite):.1f} ms at load {load_cell(b)}"
                       for nice, b in baselines.items())
    print(f"\n## Every run (suite {suite.name}; stored baselines {stored})\n")
    print("| run | nice | condition | slowdown / that run's baseline side | A/B step_s: paired ratio [95% t] p verdict "
          "| A/B step_cpu_s: same | A/B rounds | stored step_s: ratio [95% bootstrap] p verdict | load avg during "
          "| A/B wall time |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['nice']} | {r['condition']} | {r['effective']:.1%} | {r['ab_step']} | {r['ab_cpu']} "
              f"| {r.get('rounds', '-')} | {r['stored_step']} | {r['load']} | {r['wall_s']:.0f} s |")

    print("\n## Summary (counts are runs; a time metric, step time or CPU time per step, decides the "
          "run's outcome)\n")
    header = "| mode | nice | unchanged: flagged regressed | unchanged: flagged improved | unchanged: inconclusive"
    header += "".join(f" | {c}: detected | {c}: inconclusive" for c in conditions[1:])
    print(header + " |")
    print("|---" * (4 + 2 * (len(conditions) - 1) + 1) + "|")
    for mode, name in (("ab", "A/B (--against)"), ("stored", "stored baseline")):
        for nice in baselines:
            cells = [count(results, mode, "unchanged", v, nice) for v in (REGRESSED, IMPROVED, INCONCLUSIVE)]
            for condition in conditions[1:]:
                cells += [count(results, mode, condition, REGRESSED, nice),
                          count(results, mode, condition, INCONCLUSIVE, nice)]
            print(f"| {name} | {nice} | " + " | ".join(cells) + " |")
    for nice in baselines:
        walls = [r["wall_s"] for r in results if r["nice"] == nice]
        loads = [float(r["load"].split(",")[0]) for r in results if r["nice"] == nice]
        if walls:
            rounds = [r["rounds"] for r in results if r["nice"] == nice and "rounds" in r]
            print(f"\nnice {nice}: A/B run wall time median {statistics.median(walls):.0f} s, min {min(walls):.0f} s, "
                  f"max {max(walls):.0f} s over {len(walls)} runs; rounds per run "
                  f"{min(rounds, default=0)}-{max(rounds, default=0)} (at least {suite.cases[0].rounds}); "
                  f"load average during {min(loads):.1f}-{max(loads):.1f}")
    print("Read the counts as counts: a rate needs 10 runs per condition.", flush=True)


def sizing_medians(record: BenchRecord, case_name: str) -> dict[str, float]:
    """The medians a slowdown of each kind is sized from (SIZED_BY)."""
    return {metric: statistics.median(record.cases[case_name].samples[metric]) for metric in SIZED_BY.values()}


def int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path(__file__).resolve().parents[1] / "ci/suites/cpu-smoke.yaml")
    parser.add_argument("--runs", type=int_list, default=[3], help="A/B runs per condition, one count per --nice")
    parser.add_argument("--unchanged-runs", type=int, default=None,
                        help="A/B runs of the unchanged condition (default: as --runs); the others stop at --runs")
    parser.add_argument("--nice", type=int_list, default=[DEFAULT_NICE],
                        help="niceness adjustments to measure at, comma-separated (autoscale bench --nice)")
    parser.add_argument("--background-jobs", type=int, default=0,
                        help="bursty CPU-bound jobs started beside the benchmark, at the default niceness")
    parser.add_argument("--seed", type=int, default=0, help="of the background jobs' bursts")
    parser.add_argument("--slowdowns", default="sleep:0.1,spin:0.1,sleep:0.05",
                        help="kind:fraction, comma-separated: sleep (a fraction of the median step time) or spin "
                             "(a fraction of the median CPU time per step)")
    parser.add_argument("--against", type=Path, default=Path(sys.executable),
                        help="the other side's interpreter (default this one: the unchanged runs are then truly "
                             "unchanged code)")
    parser.add_argument("--out", type=Path, default=None, help="records go here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="judge the runs saved in --out again, run nothing")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    if args.reuse:
        baselines, results, conditions = reuse(args.out, suite)
        report(results, suite, baselines, conditions)
        return 0
    if len(args.runs) == 1:
        args.runs = args.runs * len(args.nice)
    if len(args.runs) != len(args.nice):
        parser.error(f"--runs gives {len(args.runs)} counts for {len(args.nice)} --nice levels")
    out = args.out or Path(tempfile.mkdtemp(prefix="autoscale-bench-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    other = probe_interpreter(args.against)
    slowdowns = [(kind, float(fraction)) for kind, fraction in (s.split(":") for s in args.slowdowns.split(","))]
    conditions = ["unchanged", *(f"{kind} {fraction:.0%} slower" for kind, fraction in slowdowns)]
    print(f"suite {suite.name}, runs per condition {dict(zip(args.nice, args.runs))} by nice, "
          f"{args.background_jobs} background jobs, records in {out}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the background jobs are stopped too
    with background_jobs(args.background_jobs, args.seed):
        run_levels(args, suite, other, out, slowdowns, conditions)
    return 0


def run_levels(args, suite, other: dict, out: Path, slowdowns: list[tuple[str, float]], conditions: list[str]) -> None:
    case_name = suite.cases[0].name
    baselines: dict[int, BenchRecord] = {}
    recent: dict[int, dict[str, float]] = {}  # per level, the latest medians a slowdown is sized from
    for adjustment in args.nice:
        started = time.monotonic()
        with raised_priority(adjustment) as priority:
            if priority.refused:
                print(f"--nice {adjustment}: {priority.refused}", file=sys.stderr)
            baseline = run_suite(suite, workdir=out / "trials" / f"stored-nice{adjustment}")
        baseline.save(baseline_path(out, priority.nice))
        baselines[priority.nice] = baseline
        recent[priority.nice] = sizing_medians(baseline, case_name)
        print(f"stored baseline at nice {priority.nice}: {time.monotonic() - started:.0f} s, median step "
              f"{step_ms(baseline, suite):.1f} ms, load {load_cell(baseline)}", file=sys.stderr, flush=True)

    results = []
    unchanged_runs = args.unchanged_runs or 0
    for run in range(max(*args.runs, unchanged_runs)):
        for adjustment, runs in zip(args.nice, args.runs):
            for condition, (kind, fraction) in zip(conditions, [("sleep", 0.0), *slowdowns]):
                if run >= (unchanged_runs or runs if fraction == 0 else runs):
                    continue
                with raised_priority(adjustment) as priority:
                    nice = priority.nice
                    label = f"run{run + 1}-nice{nice}-" + ("unchanged" if fraction == 0 else f"{kind}{fraction * 100:.0f}pct")
                    slowdown = Slowdown(fraction * recent[nice][SIZED_BY[kind]], kind)
                    started = time.monotonic()
                    base_side, cand_side = run_ab(suite, against=args.against, other=other,
                                                  workdir=out / "trials" / label, slowdown=slowdown)
                    wall_s = time.monotonic() - started
                result = judge(suite, baselines[nice], base_side, cand_side, run=run + 1, condition=condition,
                               slow_s=slowdown.step_s, wall_s=wall_s, nice=nice)
                recent[nice] = sizing_medians(base_side, case_name)
                results.append(result)
                (out / f"{label}.json").write_text(json.dumps({**result, "baseline_side": base_side.to_dict(),
                                                               "candidate_side": cand_side.to_dict()}, indent=1))
                print(f"  {label}: {wall_s:.0f} s, A/B {result['ab']}, stored {result['stored']}", file=sys.stderr,
                      flush=True)
        report(results, suite, baselines, conditions)  # so far: an interrupted run keeps it


if __name__ == "__main__":
    sys.exit(main())
