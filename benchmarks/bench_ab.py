"""A/B mode against stored-baseline mode on this machine, as it is (other jobs' load included):
false alarms in unchanged runs, detection of injected slowdowns, and the wall time of an A/B run.

Each A/B run is what `autoscale bench --suite S --against PYTHON` does (ab.run_ab, then the paired
comparison). Conditions take turns (unchanged, then each slowdown, then unchanged again, ...) so
that a change in the machine's load over the benchmark spreads over all of them. A slowdown is the
engine's test-only sleep inside every timed step of the candidate side only (`--test-sleep-per-step`),
sized as a fraction of the stored baseline's median step time; the table also shows the slowdown that
sleep actually was, relative to each run's own baseline side.

The stored-baseline mode is measured in the same runs: one baseline run at the start (`run_suite`,
what `--save-baseline` records), and every A/B run's candidate side (a real run of the unchanged or
slowed code, with the host's load recorded during it) compared with that baseline as
`autoscale bench --baseline` compares, load check included.

    python benchmarks/bench_ab.py                         # 3 runs per condition: ~35 min on 2 cores
    python benchmarks/bench_ab.py --runs 10 --against .venv-base/bin/python --out /tmp/ab
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from autoscale.bench.ab import probe_interpreter, run_ab
from autoscale.bench.compare import BenchComparison, compare_records
from autoscale.bench.record import BenchRecord
from autoscale.bench.runner import run_suite
from autoscale.bench.stats import IMPROVED, INCONCLUSIVE, REGRESSED
from autoscale.bench.suite import load_suite

TIME_METRICS = ("tokens_per_s", "step_s")


def verdicts(comparison: BenchComparison) -> dict[str, str]:
    return {f"{row.case}/{row.metric}": row.verdict for row in comparison.rows}


def outcome(comparison: BenchComparison) -> str:
    """regressed (a time metric regressed), improved, inconclusive, or unchanged."""
    found = {row.verdict for row in comparison.rows if row.metric in TIME_METRICS}
    for verdict in (REGRESSED, IMPROVED, INCONCLUSIVE):
        if verdict in found:
            return verdict
    return "unchanged"


def step_cell(comparison: BenchComparison) -> str:
    row = next(r for r in comparison.rows if r.metric == "step_s")
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


def report(results: list[dict], suite, baseline: BenchRecord, base_step_s: float, conditions: list[str],
           runs_done: int) -> None:
    print(f"\n## Every run (suite {suite.name}; stored baseline median step {base_step_s * 1e3:.1f} ms, "
          f"load {load_cell(baseline)})\n")
    print("| run | condition | sleep / that run's baseline-side step | A/B step_s: paired ratio [95% t] p verdict "
          "| stored: ratio [95% bootstrap] p verdict | load avg during | A/B wall time |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['run']} | {r['condition']} | {r['effective']:.1%} | {r['ab_step']} | {r['stored_step']} "
              f"| {r['load']} | {r['wall_s']:.0f} s |")

    print("\n## Summary (counts are runs; a time metric, tokens/s or step time, decides the run's outcome)\n")
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
    parser.add_argument("--slowdowns", default="0.1,0.05", help="fractions of the baseline's median step time")
    parser.add_argument("--against", type=Path, default=Path(sys.executable),
                        help="the other side's interpreter (default this one: the unchanged runs are then truly "
                             "unchanged code)")
    parser.add_argument("--out", type=Path, default=None, help="records go here (default: a temporary folder)")
    args = parser.parse_args(argv)
    suite = load_suite(args.suite)
    out = args.out or Path(tempfile.mkdtemp(prefix="autoscale-bench-ab-"))
    out.mkdir(parents=True, exist_ok=True)
    other = probe_interpreter(args.against)
    slowdowns = [float(s) for s in args.slowdowns.split(",")]
    conditions = ["unchanged", *(f"{s:.0%} slower" for s in slowdowns)]
    print(f"suite {suite.name}, {args.runs} A/B run(s) per condition, records in {out}", file=sys.stderr)

    started = time.monotonic()
    baseline = run_suite(suite, workdir=out / "trials" / "stored")
    baseline.save(out / "stored-baseline.json")
    base_step_s = statistics.median(baseline.cases[suite.cases[0].name].samples["step_s"])
    print(f"stored baseline: {time.monotonic() - started:.0f} s, median step {base_step_s * 1e3:.1f} ms, "
          f"load {load_cell(baseline)}", file=sys.stderr, flush=True)

    results = []
    for run in range(args.runs):
        for condition, slowdown in zip(conditions, [0.0, *slowdowns]):
            label = f"run{run + 1}-{condition.split()[0].replace('%', 'pct')}"
            started = time.monotonic()
            base_side, cand_side = run_ab(suite, against=args.against, other=other,
                                          workdir=out / "trials" / label, slow_step_s=slowdown * base_step_s)
            wall_s = time.monotonic() - started
            ab = compare_records(base_side, cand_side, suite, paired=True, against=str(args.against))
            stored = compare_records(baseline, cand_side, suite)
            side_step_s = statistics.median(base_side.cases[suite.cases[0].name].samples["step_s"])
            result = {"run": run + 1, "condition": condition, "wall_s": wall_s, "ab": outcome(ab),
                      "stored": outcome(stored), "ab_step": step_cell(ab), "stored_step": step_cell(stored),
                      "load": load_cell(cand_side), "effective": slowdown * base_step_s / side_step_s,
                      "ab_verdicts": verdicts(ab), "stored_verdicts": verdicts(stored)}
            results.append(result)
            (out / f"{label}.json").write_text(json.dumps({**result, "baseline_side": base_side.to_dict(),
                                                           "candidate_side": cand_side.to_dict()}, indent=1))
            print(f"  {label}: {wall_s:.0f} s, A/B {result['ab']}, stored {result['stored']}", file=sys.stderr,
                  flush=True)
        report(results, suite, baseline, base_step_s, conditions, run + 1)  # so far: an interrupted run keeps it

    return 0


if __name__ == "__main__":
    sys.exit(main())
