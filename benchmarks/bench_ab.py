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

    python benchmarks/bench_ab.py                         # 3 runs per condition: ~1 h on 2 busy cores
    python benchmarks/bench_ab.py --runs 10 --against .venv-base/bin/python --out /tmp/ab
    python benchmarks/bench_ab.py --reuse --out /tmp/ab      # the tables again from saved runs
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autoscale.bench.ab import Slowdown, probe_interpreter, run_ab
from autoscale.bench.compare import BenchComparison, compare_records
from autoscale.bench.record import BenchRecord, load_record
from autoscale.bench.runner import run_suite
from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, REGRESSED
from autoscale.bench.suite import load_suite

TIME_METRICS = ("tokens_per_s", "step_s", "step_cpu_s")
SIZED_BY = {"sleep": "step_s", "spin": "step_cpu_s"}  # the metric a slowdown of each kind is a fraction of


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


def count(results: list[dict], mode: str, condition: str, verdict: str) -> str:
    chosen = [r for r in results if r["condition"] == condition]
    return f"{sum(r[mode] == verdict for r in chosen)}/{len(chosen)}"


def judge(suite, baseline: BenchRecord, base_side: BenchRecord, cand_side: BenchRecord, *, run: int,
          condition: str, slow_s: float, wall_s: float) -> dict:
    """Both modes' verdicts on one A/B run: paired against its own baseline side, unpaired against the
    stored baseline."""
    ab = compare_records(base_side, cand_side, suite, paired=True)
    stored = compare_records(baseline, cand_side, suite)
    sized_by = SIZED_BY[condition.split()[0]] if condition != "unchanged" else "step_s"
    side_value = statistics.median(base_side.cases[suite.cases[0].name].samples[sized_by])
    return {"run": run, "condition": condition, "wall_s": wall_s, "slow_s": slow_s, "ab": outcome(ab),
            "stored": outcome(stored), "ab_step": metric_cell(ab, "step_s"),
            "stored_step": metric_cell(stored, "step_s"),
            "ab_cpu": metric_cell(ab, "step_cpu_s"), "load": load_cell(cand_side), "effective": slow_s / side_value,
            "ab_verdicts": verdicts(ab), "stored_verdicts": verdicts(stored)}


def reuse(out: Path, suite) -> tuple[BenchRecord, list[dict], list[str]]:
    """The saved runs of an earlier (or interrupted) benchmark, judged again by the current code."""
    baseline = load_record(out / "stored-baseline.json")
    results, conditions = [], ["unchanged"]
    for path in sorted(out.glob("run*.json"), key=lambda p: p.stat().st_mtime):
        saved = json.loads(path.read_text())
        base_side, cand_side = (BenchRecord.from_dict(saved[key]) for key in ("baseline_side", "candidate_side"))
        results.append(judge(suite, baseline, base_side, cand_side, run=saved["run"],
                             condition=saved["condition"], slow_s=saved["slow_s"], wall_s=saved["wall_s"]))
        if saved["condition"] not in conditions:
            conditions.append(saved["condition"])
    return baseline, results, conditions


def report(results: list[dict], suite, baseline: BenchRecord, base_step_s: float, conditions: list[str],
           runs_done: int) -> None:
    print(f"\n## Every run (suite {suite.name}; stored baseline median step {base_step_s * 1e3:.1f} ms, "
          f"load {load_cell(baseline)})\n")
    print("| run | condition | slowdown / that run's baseline side | A/B step_s: paired ratio [95% t] p verdict "
          "| A/B step_cpu_s: same | stored step_s: ratio [95% bootstrap] p verdict | load avg during | A/B wall time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['condition']} | {r['effective']:.1%} | {r['ab_step']} | {r['ab_cpu']} "
              f"| {r['stored_step']} | {r['load']} | {r['wall_s']:.0f} s |")

    print("\n## Summary (counts are runs; a time metric, tokens/s, step time or CPU time per step, decides the "
          "run's outcome)\n")
    header = "| mode | unchanged: flagged regressed | unchanged: flagged improved | unchanged: inconclusive"
    header += "".join(f" | {c}: detected | {c}: inconclusive" for c in conditions[1:])
    print(header + " |")
    print("|---" * (3 + 2 * (len(conditions) - 1) + 1) + "|")
    for mode, name in (("ab", "A/B (--against)"), ("stored", "stored baseline")):
        cells = [count(results, mode, "unchanged", v) for v in (REGRESSED, IMPROVED, INCONCLUSIVE)]
        for condition in conditions[1:]:
            cells += [count(results, mode, condition, REGRESSED), count(results, mode, condition, INCONCLUSIVE)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    walls = [r["wall_s"] for r in results]
    print(f"\nA/B run wall time: median {statistics.median(walls):.0f} s, min {min(walls):.0f} s, "
          f"max {max(walls):.0f} s over {len(walls)} runs ({suite.cases[0].rounds} rounds per config)")
    print(f"{runs_done} run(s) per condition: a smaller sample than 10 unchanged and 10 slowed runs; "
          "read the counts as such.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", type=Path, default=Path(__file__).resolve().parents[1] / "ci/suites/cpu-smoke.yaml")
    parser.add_argument("--runs", type=int, default=3, help="A/B runs per condition")
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
        baseline, results, conditions = reuse(args.out, suite)
        base_step_s = statistics.median(baseline.cases[suite.cases[0].name].samples["step_s"])
        runs_done = min(sum(r["condition"] == c for r in results) for c in conditions)
        report(results, suite, baseline, base_step_s, conditions, runs_done)
        return 0
    out = args.out or Path(tempfile.mkdtemp(prefix="autoscale-bench-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    other = probe_interpreter(args.against)
    slowdowns = [(kind, float(fraction)) for kind, fraction in (s.split(":") for s in args.slowdowns.split(","))]
    conditions = ["unchanged", *(f"{kind} {fraction:.0%} slower" for kind, fraction in slowdowns)]
    print(f"suite {suite.name}, {args.runs} A/B run(s) per condition, records in {out}", file=sys.stderr)

    started = time.monotonic()
    baseline = run_suite(suite, workdir=out / "trials" / "stored")
    baseline.save(out / "stored-baseline.json")
    base_step_s = statistics.median(baseline.cases[suite.cases[0].name].samples["step_s"])
    print(f"stored baseline: {time.monotonic() - started:.0f} s, median step {base_step_s * 1e3:.1f} ms, "
          f"load {load_cell(baseline)}", file=sys.stderr, flush=True)

    results = []
    case_name = suite.cases[0].name
    # each slowdown is sized from the latest measurement: load moves step time 2-4x
    recent = {metric: statistics.median(baseline.cases[case_name].samples[metric]) for metric in SIZED_BY.values()}
    for run in range(args.runs):
        for condition, (kind, fraction) in zip(conditions, [("sleep", 0.0), *slowdowns]):
            label = f"run{run + 1}-" + ("unchanged" if fraction == 0 else f"{kind}{fraction * 100:.0f}pct")
            slowdown = Slowdown(fraction * recent[SIZED_BY[kind]], kind)
            started = time.monotonic()
            base_side, cand_side = run_ab(suite, against=args.against, other=other,
                                          workdir=out / "trials" / label, slowdown=slowdown)
            wall_s = time.monotonic() - started
            result = judge(suite, baseline, base_side, cand_side, run=run + 1, condition=condition,
                           slow_s=slowdown.step_s, wall_s=wall_s)
            recent = {metric: statistics.median(base_side.cases[case_name].samples[metric])
                      for metric in SIZED_BY.values()}
            results.append(result)
            (out / f"{label}.json").write_text(json.dumps({**result, "baseline_side": base_side.to_dict(),
                                                           "candidate_side": cand_side.to_dict()}, indent=1))
            print(f"  {label}: {wall_s:.0f} s, A/B {result['ab']}, stored {result['stored']}", file=sys.stderr,
                  flush=True)
        report(results, suite, baseline, base_step_s, conditions, run + 1)  # so far: an interrupted run keeps it

    return 0


if __name__ == "__main__":
    sys.exit(main())
