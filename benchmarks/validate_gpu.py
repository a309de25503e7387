"""The cost model against published GPU training runs: throughput, memory, rankings within sweeps.

    python benchmarks/validate_gpu.py [--data DIR] [--megatron-csv PATH]

`--data` holds `published_gpu_runs.csv` and `llmfoundry_all.csv` (default `benchmarks/data/gpu`,
a copy of the shared data with its SOURCES.md); `--megatron-csv` Narayanan et al. 2021's rows (`published_runs.csv`).
These are other people's published measurements (their sources are in the data's SOURCES.md),
not ours. Every run is predicted from its own layout with one parameter set per GPU family. The
figure that counts is leave-one-source-out (LOSO): the efficiencies fitted on every other source,
scored on the source held out. The in-sample fit on all sources is shown beside it, and is what
`costmodel.params` ships as the GPU defaults. Memory is never fitted. Exit status 0 whatever the
goals: this is a report.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path

from scipy.stats import spearmanr

from autoscale.costmodel.gpu_fit import (FITTED, RunPrediction, fit_families, layout_refusal, leave_one_source_out,
                                         predict_run)
from autoscale.costmodel.gpu_runs import SOURCES, load_published_runs
from autoscale.costmodel.params import GPU_MEMORY_ERROR

REPO = Path(__file__).resolve().parent.parent
PUBLISHED = REPO / "benchmarks" / "data"  # a copy of shared/data, SOURCES.md beside the GPU rows
GIB = 2**30
GOALS = {"loso_median": 0.10, "loso_max": 0.25, "loso_source_weighted_median": 0.12, "memory_median": 0.10, "spearman_median": 0.8,
         "top3_fraction": 1.0}


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def source_weighted_median(predictions: list[RunPrediction]) -> float:
    """The median |error| with each source weighing the same, whatever its number of rows."""
    rows = Counter(p.run.source for p in predictions)
    weighted = sorted((abs(p.error), 1 / rows[p.run.source]) for p in predictions)
    half, running = sum(weight for _, weight in weighted) / 2, 0.0
    for error, weight in weighted:
        running += weight
        if running >= half:
            return error
    return float("nan")


def throughput_table(loso: list[RunPrediction], fitted: list[RunPrediction]) -> None:
    print("\n== tokens/s per GPU, per source: leave-one-source-out (the figure that counts) and in-sample ==")
    print(f"{'held-out source':<14} {'rows':>5} {'LOSO median':>12} {'LOSO max':>9} {'in-sample median':>17} "
          f"{'in-sample max':>14} {'not fit':>8}")
    for source in SOURCES:
        held = [p for p in loso if p.run.source == source]
        own = [p for p in fitted if p.run.source == source]
        if not held:
            continue
        errors, own_errors = [abs(p.error) for p in held], [abs(p.error) for p in own]
        print(f"{source:<14} {len(held):>5} {_median(errors):>12.1%} {max(errors):>9.1%} "
              f"{_median(own_errors):>17.1%} {max(own_errors):>14.1%} {sum(not p.fits for p in held):>8}")
    errors = [abs(p.error) for p in loso]
    print(f"{'all':<14} {len(loso):>5} {_median(errors):>12.1%} {max(errors):>9.1%} "
          f"{_median([abs(p.error) for p in fitted]):>17.1%} {max(abs(p.error) for p in fitted):>14.1%} "
          f"{sum(not p.fits for p in loso):>8}")


def worst_rows(loso: list[RunPrediction], count: int = 15) -> None:
    print(f"\n== the {count} largest LOSO errors (held-out source, run, point predicted) ==")
    for p in sorted(loso, key=lambda p: -abs(p.error))[:count]:
        print(f"{p.run.source:<12} {p.run.label[:46]:<46} {p.point.short():<38} v{p.point.vpp} "
              f"measured {p.run.measured_tokens_per_s_per_gpu:>9.0f} predicted {p.tokens_per_s_per_gpu:>9.0f} "
              f"{p.error:>+7.1%}")


def memory_table(loso: list[RunPrediction]) -> list[float]:
    """Prints the memory errors, and the figure `costmodel.params.GPU_MEMORY_ERROR` is read from: the
    largest |error| over the runs the memory model was shaped on (every printed peak but those at
    torchtitan's per-operator checkpointing, "op"); the "op" runs are scored apart, out of sample."""
    print("\n== peak memory per GPU where published (never fitted: every figure is out of sample) ==")
    print(f"{'source':<11} {'run':<46} {'point':<40} {'measured GiB':>12} {'predicted':>10} {'error':>8}")
    errors = []
    for p in loso:
        if p.memory_error is None:
            continue
        errors.append(p.memory_error)
        print(f"{p.run.source:<11} {p.run.label[:46]:<46} {p.point.short():<40} "
              f"{p.run.measured_peak_bytes / GIB:>12.1f} {p.prediction.memory.peak_bytes / GIB:>10.1f} "
              f"{p.memory_error:>+8.1%}")
    for label, keep in (("shaped on (all but checkpointing op)", lambda point: point.checkpointing != "op"),
                        ("scored out of sample (torchtitan's per-operator checkpointing, op)",
                         lambda point: point.checkpointing == "op")):
        group = [abs(p.memory_error) for p in loso if p.memory_error is not None and keep(p.point)]
        if group:
            print(f"{label}: {len(group)} runs, median |error| {_median(group):.1%}, max {max(group):.1%}")
    print(f"(costmodel.params.GPU_MEMORY_ERROR = {GPU_MEMORY_ERROR:.0%}, the first group's largest, rounded up)")
    return errors


def sweep_table(loso: list[RunPrediction]) -> tuple[list[float], list[bool], list[bool]]:
    print("\n== within-sweep ranking (groups of >= 5 runs differing only in layout), LOSO predictions ==")
    print(f"{'sweep':<46} {'rows':>5} {'Spearman':>9} {'top-3 within 5% of best':>24} {'winner predicted to fit':>24}")
    sweeps = defaultdict(list)
    for p in loso:
        if p.run.sweep:
            sweeps[p.run.sweep].append(p)
    rhos, top3s, winners_fit = [], [], []
    for name, group in sorted(sweeps.items()):
        if len(group) < 5:
            continue
        measured = [p.run.measured_tokens_per_s_per_gpu for p in group]
        predicted = [p.tokens_per_s_per_gpu for p in group]
        rho = float(spearmanr(predicted, measured).statistic)
        best = max(measured)
        ranked = sorted(group, key=lambda p: -p.tokens_per_s_per_gpu if p.fits else 0.0)[:3]
        top3 = any(p.run.measured_tokens_per_s_per_gpu >= 0.95 * best for p in ranked)
        winner = max(group, key=lambda p: p.run.measured_tokens_per_s_per_gpu)
        rhos.append(rho)
        top3s.append(top3)
        winners_fit.append(winner.fits)
        print(f"{name:<46} {len(group):>5} {rho:>9.2f} {str(top3):>24} {str(winner.fits):>24}")
    return rhos, top3s, winners_fit


def parameter_table(fitted: dict, used: dict) -> None:
    print("\n== fitted efficiencies per GPU family (all sources; then each LOSO fit) ==")
    print(f"{'fit':<26} {'family':<7} " + " ".join(f"{name:>21}" for name in FITTED))
    for label, families in [("all sources", fitted)] + [(f"without {s}", used[s]) for s in SOURCES if s in used]:
        for family, params in sorted(families.items()):
            print(f"{label:<26} {family:<7} " + " ".join(f"{getattr(params, name):>21.3f}" for name in FITTED))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=PUBLISHED / "gpu")
    parser.add_argument("--megatron-csv", type=Path, default=PUBLISHED / "published_runs.csv")
    args = parser.parse_args(argv)
    runs = load_published_runs(args.data, args.megatron_csv if args.megatron_csv.exists() else None)
    refused = [(run, layout_refusal(run)) for run in runs]
    refused = [(run, reason) for run, reason in refused if reason]
    runs = [run for run in runs if layout_refusal(run) is None]
    print(f"{len(runs) + len(refused)} published runs from {args.data} (and {args.megatron_csv.name}); "
          f"published measurements by their authors, not ours")
    for run, reason in refused:
        print(f"  not scored, the cost model cannot lay it out: {run.source} {run.label}: {reason}")

    fitted = fit_families(runs)
    in_sample = [predict_run(run, fitted[run.hardware.family or run.hardware.name]) for run in runs]
    loso, used = leave_one_source_out(runs)
    throughput_table(loso, in_sample)
    worst_rows(loso)
    memory_errors = memory_table(loso)
    rhos, top3s, winners_fit = sweep_table(loso)
    parameter_table(fitted, used)

    not_fit = [p for p in loso if not p.fits]
    errors = [abs(p.error) for p in loso]
    memory_abs = [abs(e) for e in memory_errors]
    print("\n== goals ==")
    lines = [
        (f"LOSO tokens/s per GPU median |error| {_median(errors):.1%} (goal <= 10%)",
         _median(errors) <= GOALS["loso_median"]),
        (f"LOSO tokens/s per GPU max |error| {max(errors):.1%} (goal <= 25%)", max(errors) <= GOALS["loso_max"]),
        (f"LOSO tokens/s per GPU median |error|, each source weighing the same: {source_weighted_median(loso):.1%} "
         f"(goal <= 12%)", source_weighted_median(loso) <= GOALS["loso_source_weighted_median"]),
        (f"peak memory median |error| {_median(memory_abs):.1%} over {len(memory_abs)} runs (goal <= 10%)",
         _median(memory_abs) <= GOALS["memory_median"]),
        (f"published runs predicted not to fit: {len(not_fit)} of {len(loso)} (goal 0)", not not_fit),
        (f"within-sweep Spearman median {_median(rhos):.2f} over {len(rhos)} sweeps (goal >= 0.8)",
         _median(rhos) >= GOALS["spearman_median"]),
        (f"sweeps whose predicted top 3 holds a run within 5% of the measured best: {sum(top3s)} of {len(top3s)}",
         all(top3s)),
        (f"measured sweep winners predicted not to fit: {sum(not w for w in winners_fit)} of {len(winners_fit)}",
         all(winners_fit)),
    ]
    for text, met in lines:
        print(f"  [{_verdict(met):>6}] {text}")
    for p in not_fit:
        print(f"  predicted not to fit: {p.run.source} {p.run.label} at {p.point.short()}: "
              f"{p.prediction.memory.peak_bytes / GIB:.1f} GiB against {p.prediction.budget.usable_bytes / GIB:.1f} GiB usable")
    return 0


if __name__ == "__main__":
    sys.exit(main())
