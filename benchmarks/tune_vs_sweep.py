"""Does a short `autoscale tune` find (nearly) the best config? Compared with a full sweep, in one run.

1. Measures every point of the space (a full sweep, warm ranks), and saves the table as
   `benchmarks/data/<name>.csv` (trials.csv columns) with a sidecar `<name>.json` saying what,
   where and when, for the replay benchmark and the cost model's ranking check.
2. Runs `autoscale tune` on the same space with `--trials` trials (default 12).
3. Head to head: the tuned best and the sweep's top points measured again, interleaved round by
   round so machine load hits them alike; the ratio of medians is the figure (the goal: the tuned
   best within 5% of the sweep's best). Single sweep measurements on a shared machine swing by 2x.
4. Prints the tune run's per-trial wall time split into launch overhead and timed steps.

    python benchmarks/tune_vs_sweep.py --reuse-table         # skip step 1, use the recorded table

    python benchmarks/tune_vs_sweep.py                      # gpt-tiny, default space, 2 CPU ranks
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from autoscale.engine import TrialRequest, WarmPool
from autoscale.hardware import detect
from autoscale.models import resolve_model
from autoscale.results import TrialRecord, write_trials_csv
from autoscale.provenance import utc_now, versions
from autoscale.session import TuneSession
from autoscale.space import load_space

DATA = Path(__file__).resolve().parent / "data"


def sweep(spec, points, *, seq_len: int, nproc: int, work: Path) -> list[TrialRecord]:
    records = []
    with WarmPool(work / "pool") as pool:
        for number, point in enumerate(points):
            started = utc_now()
            result = pool(TrialRequest(spec=spec, point=point, seq_len=seq_len, nproc=nproc,
                                       workdir=work / "sweep" / str(number)))
            records.append(TrialRecord(number=number, point=point, status="ok" if result.ok else "failed",
                                       reason=result.reason, result=result, started_at=started, finished_at=utc_now()))
            shown = f"{result.tokens_per_s:9,.0f} tok/s" if result.ok else result.reason
            print(f"sweep {number + 1:>3}/{len(points)} {point.short():<32} {shown}", flush=True)
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt-tiny")
    parser.add_argument("--space", default="default")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--name", default=None, help="table name under benchmarks/data (default cpu-sweep-<model>)")
    parser.add_argument("--reuse-table", action="store_true", help="read the recorded sweep instead of measuring it")
    parser.add_argument("--rounds", type=int, default=3, help="head-to-head rounds")
    parser.add_argument("--top", type=int, default=3, help="the sweep's top points taken to the head-to-head")
    args = parser.parse_args()
    spec, backend = resolve_model(args.model), "cpu"
    space = load_space(args.space).for_backend(backend, global_batch=args.global_batch, world_size=args.nproc)
    points = space.points(global_batch=args.global_batch, world_size=args.nproc)
    work = Path(tempfile.mkdtemp(prefix="autoscale-tune-vs-sweep-"))

    name = args.name or f"{backend}-sweep-{spec.name}"
    started = time.monotonic()
    if args.reuse_table:
        swept = read_table(DATA / f"{name}.csv")
        sweep_s = float("nan")
    else:
        swept = sweep(spec, points, seq_len=args.seq_len, nproc=args.nproc, work=work)
        sweep_s = time.monotonic() - started
        DATA.mkdir(exist_ok=True)
        write_trials_csv(swept, DATA / f"{name}.csv")
        write_sidecar(DATA / f"{name}.json", spec, args, backend)
    run_tune_and_compare(spec, swept, points, args, backend, work, sweep_s)


def read_table(path: Path) -> list[TrialRecord]:
    import csv

    from autoscale.engine.request import TrialResult
    from autoscale.point import Point

    records = []
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            result = TrialResult(status="ok", tokens_per_s=float(row["tokens_per_s"])) if row["status"] == "ok" else None
            records.append(TrialRecord(number=int(row["number"]), point=Point.from_row(row), status=row["status"],
                                       reason=row["reason"], result=result))
    return records


def write_sidecar(path: Path, spec, args, backend: str) -> None:
    path.write_text(json.dumps({
        "model": spec.name, "world_size": args.nproc, "seq_len": args.seq_len, "global_batch": args.global_batch,
        "hardware": detect(backend).name, "hardware_description": detect(backend).description,
        "space_name": args.space, "recorded_at": utc_now(), "versions": versions(),
        "note": "every point measured once with warm ranks (benchmarks/tune_vs_sweep.py)"}, indent=2) + "\n")


def head_to_head(spec, points, args, work: Path) -> list[list[float]]:
    """tokens/s of each point over `args.rounds` interleaved rounds."""
    samples: list[list[float]] = [[] for _ in points]
    with WarmPool(work / "h2h-pool") as pool:
        for round_index in range(args.rounds):
            for index, point in enumerate(points):
                result = pool(TrialRequest(spec=spec, point=point, seq_len=args.seq_len, nproc=args.nproc,
                                           workdir=work / "h2h" / f"{round_index}-{index}"))
                if result.ok:
                    samples[index].append(result.tokens_per_s)
    return samples


def run_tune_and_compare(spec, swept, points, args, backend: str, work: Path, sweep_s: float) -> None:
    started = time.monotonic()
    session = TuneSession.from_flags(model=args.model, trials=args.trials, space=args.space,
                                     global_batch=args.global_batch, seq_len=args.seq_len, backend=backend,
                                     nproc=args.nproc, out=work / "tune", study_name="tune-vs-sweep",
                                     timeout_per_trial=300, storage=None, resume=False, seed=0,
                                     command=["benchmarks/tune_vs_sweep.py"])
    outcome = session.run()
    tune_s = time.monotonic() - started

    by_point = {r.point.key(): r for r in swept if r.status == "ok" and r.result is not None}
    sweep_best = max(by_point.values(), key=lambda r: r.result.tokens_per_s)
    tuned = outcome.summary["best"]
    tuned_record = next(r for r in outcome.records if r.number == tuned["trial_number"])
    tuned_in_sweep = by_point.get(tuned_record.point.key())
    ran = [r for r in outcome.records if r.result is not None]
    overhead = [r.result.wall_s - (r.result.steps * r.point.global_batch(args.nproc) * args.seq_len
                                   / r.result.tokens_per_s) for r in ran if r.status == "ok"]

    print(f"\n{spec.name}: space {args.space!r} on {args.nproc} CPU ranks, global batch {args.global_batch} x "
          f"{args.seq_len} tokens; {len(points)} points")
    print(f"{'':<34}{'config':<34}{'tokens/s':>10}")
    print(f"{'full sweep best':<34}{sweep_best.point.short():<34}{sweep_best.result.tokens_per_s:>10,.0f}")
    print(f"{'tune best (its own measurement)':<34}{tuned_record.point.short():<34}{tuned_record.result.tokens_per_s:>10,.0f}")
    if tuned_in_sweep is not None:
        ratio = tuned_in_sweep.result.tokens_per_s / sweep_best.result.tokens_per_s
        print(f"{'tune best, as the sweep measured it':<34}{tuned_record.point.short():<34}"
              f"{tuned_in_sweep.result.tokens_per_s:>10,.0f}")
        print(f"tune best / sweep best (both from the sweep): {ratio:.3f}  (goal >= 0.95)")
    rank = sorted(by_point.values(), key=lambda r: -r.result.tokens_per_s).index(tuned_in_sweep) + 1 \
        if tuned_in_sweep is not None else None
    print(f"tune's best is #{rank} of {len(by_point)} measured points in the sweep")
    ranked = sorted(by_point.values(), key=lambda r: -r.result.tokens_per_s)
    contenders = [tuned_record.point] + [r.point for r in ranked[:args.top] if r.point != tuned_record.point]
    samples = head_to_head(spec, contenders, args, work)
    medians = [statistics.median(s) if s else float("nan") for s in samples]
    best_of_sweep = max(medians[1:]) if len(medians) > 1 else medians[0]
    print(f"\nhead to head, {args.rounds} interleaved rounds (median tokens/s):")
    for label, point, median, values in zip(["tune best"] + [f"sweep #{i + 1}" for i in range(args.top)],
                                            contenders, medians, samples):
        print(f"  {label:<12}{point.short():<34}{median:>10,.0f}   samples {', '.join(f'{v:,.0f}' for v in values)}")
    print(f"tune best / best of the sweep's top {args.top}, head to head: {medians[0] / best_of_sweep:.3f}"
          f"  (goal >= 0.95)")
    print(f"wall time: sweep {sweep_s:.0f} s ({len(points)} points), tune {tune_s:.0f} s ({len(ran)} launched trials)")
    print(f"tune per-trial wall {statistics.median(r.result.wall_s for r in ran):.2f} s median, of which launch "
          f"overhead (wall minus timed steps) {statistics.median(overhead):.2f} s")


if __name__ == "__main__":
    main()
